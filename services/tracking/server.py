"""The TrackingService servicer: proto <-> domain and store, nothing more."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from loom.common.v1 import access_pb2
from loom.tracking.v1 import tracking_pb2 as pb
from loom.tracking.v1 import tracking_pb2_grpc
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.auth import Caller, current_caller, require_self_or
from libs.client_ip import caller_ip
from libs.db import run_in_transaction
from libs.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, ResourceExhausted, Violations
from libs.idempotency import claim, idempotency_table, remember, run_idempotent, validate_request_id
from libs.pagination import decode_token, encode_token, page_size
from libs.retention import retention_days
from services.tracking import domain, store
from services.tracking.domain import Agent, Event, IngestLimits
from services.tracking.ingest import Enricher, GroupCommitter, uuid7_batch
from services.tracking.settings import TrackingSettings

IDEMPOTENCY = idempotency_table(MetaData(schema="tracking"))
PRIVILEGED = (access_pb2.ROLE_ADMIN, access_pb2.ROLE_SERVICE)
MAX_RECOMMENDATIONS = 100
MAX_TOP_PRODUCTS = 1000
MAX_REMEMBERED_IP_HASHES = 65536


def _time(ts: Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def _stamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _range(request) -> tuple[datetime | None, datetime | None]:
    start = _time(request.start_time, request.HasField("start_time"))
    end = _time(request.end_time, request.HasField("end_time"))
    if start and end and start >= end:
        raise InvalidArgument.field("end_time", "must be after start_time")
    return start, end


def _post(row: store.PostRow) -> pb.Post:
    return pb.Post(
        post_id=row.post_id,
        title=row.title,
        url=row.url,
        published=row.published,
        share_count=row.share_count,
        publish_time=_stamp(row.publish_time),
        create_time=_stamp(row.create_time),
        update_time=_stamp(row.update_time),
    )


def _check_id(field: str, value: str, *, required: bool = True) -> None:
    problem = domain.id_problem(value, required=required)
    if problem:
        raise InvalidArgument.field(field, problem)


class TrackingServicer(tracking_pb2_grpc.TrackingServiceServicer):
    def __init__(self, engine: AsyncEngine, settings: TrackingSettings, enricher: Enricher) -> None:
        self._engine = engine
        self._settings = settings
        self._enricher = enricher
        self._salts = store.SaltBook(engine)
        self._hashed_with: bytes | None = None  # the salt of the hashes below
        self._ip_hashes: dict[str, bytes] = {}  # a client calls from one address many times a day
        self._limits = IngestLimits(
            dedup_window=timedelta(seconds=settings.dedup_window_seconds),
            max_age=timedelta(seconds=settings.max_event_age_seconds),
            max_skew=timedelta(seconds=settings.max_clock_skew_seconds),
        )
        self._writers = [
            store.InteractionWriter(settings.database_url, self._limits.dedup_window)
            for _ in range(settings.ingest_writers)
        ]
        self.committer = GroupCommitter(
            [w.store for w in self._writers],
            max_batch=settings.ingest_max_batch_events,
            delay=settings.ingest_commit_delay_ms / 1000,
            group_calls=settings.ingest_commit_group_calls,
        )

    async def close(self) -> None:
        """Lets queued groups commit, then closes the writers' connections."""
        await self.committer.close()
        for writer in self._writers:
            await writer.close()

    # ------------------------------------------------------------------ ingestion

    async def _ip_hash(self, context, now: datetime) -> tuple[str, bytes]:
        ip = caller_ip(context)
        salt = await self._salts.salt(now.date())
        if salt is not self._hashed_with or len(self._ip_hashes) >= MAX_REMEMBERED_IP_HASHES:
            # Forgotten with the salt: no older day's hash outlives it in memory either.
            self._hashed_with, self._ip_hashes = salt, {}
        hashed = self._ip_hashes.get(ip)
        if hashed is None:
            hashed = self._ip_hashes[ip] = domain.ip_hash(salt, ip)
        return ip, hashed

    def _events(
        self, items, caller: Caller, ip: str, ip_hash: bytes, now: datetime
    ) -> tuple[list[tuple[int, Event]], dict[int, list[FieldViolation]]]:
        """The enriched events of a batch (with their indexes) and why the others are rejected.

        Runs per event, so whatever is the same for the whole batch (bounds, the caller's
        identity, the country, ids) is worked out once and each distinct user agent parsed once.
        """
        earliest, latest = now - self._limits.max_age, now + self._limits.max_skew
        country = self._enricher.country(ip)
        if caller.anonymous:
            own_user, named_user_problem = None, "anonymous callers cannot name a user; sign in"
        elif caller.role in (access_pb2.ROLE_BUYER, access_pb2.ROLE_SUPPLIER):
            own_user, named_user_problem = caller.subject, "must be the caller's own id"
        else:
            own_user, named_user_problem = None, None
        agents: dict[str, Agent] = {}
        ids = uuid7_batch(len(items))
        accepted: list[tuple[int, Event]] = []
        rejected: dict[int, list[FieldViolation]] = {}
        ids_to_check: list[str] = []
        for index, item in enumerate(items):
            user_id = item.user_id
            if named_user_problem is not None and user_id and user_id != own_user:
                rejected[index] = [FieldViolation("user_id", named_user_problem)]
                continue
            user_id = user_id or own_user
            occurred_at = item.occurred_time.ToDatetime(tzinfo=UTC) if item.HasField("occurred_time") else now
            type_, product_id, session_id = item.type, item.product_id, item.session_id
            anonymous_id, client_event_id = item.anonymous_id, item.client_event_id
            referrer, user_agent, page = item.referrer, item.user_agent, item.page
            if not domain.interaction_acceptable(
                type_, product_id, session_id, occurred_at, earliest, latest, referrer, user_agent, page
            ):
                rejected[index] = self._violations(item, user_id, now)
                continue
            ids_to_check += (product_id, session_id, user_id or "", anonymous_id, client_event_id)
            agent = agents.get(user_agent)
            if agent is None:
                agent = agents[user_agent] = self._enricher.agent(user_agent)
            accepted.append((index, Event(
                ids[index], occurred_at, type_, product_id, session_id, user_id or None, anonymous_id or None,
                client_event_id or None, page or None, domain.referrer_host(referrer), country,
                agent.browser, agent.os, agent.device, ip_hash,
            )))
        if not domain.ids_acceptable(ids_to_check):  # rare: find the items with a malformed id
            for index, _ in accepted:
                violations = self._violations(items[index], items[index].user_id or own_user, now)
                if violations:
                    rejected[index] = violations
            accepted = [(index, event) for index, event in accepted if index not in rejected]
        return accepted, rejected

    def _violations(self, item: pb.Interaction, user_id: str | None, now: datetime) -> list[FieldViolation]:
        has_time = item.HasField("occurred_time")
        return domain.interaction_violations(
            type=item.type, product_id=item.product_id, session_id=item.session_id, user_id=user_id or "",
            anonymous_id=item.anonymous_id, client_event_id=item.client_event_id,
            occurred_at=item.occurred_time.ToDatetime(tzinfo=UTC) if has_time else None,
            referrer=item.referrer, user_agent=item.user_agent, page=item.page, now=now, limits=self._limits,
        )

    async def TrackInteraction(self, request, context):
        now = datetime.now(UTC)
        ip, ip_hash = await self._ip_hash(context, now)
        accepted, rejected = self._events((request.interaction,), current_caller(), ip, ip_hash, now)
        if rejected:
            raise InvalidArgument([FieldViolation(f"interaction.{v.field}", v.description) for v in rejected[0]])
        [outcome] = await self.committer.submit([accepted[0][1]])
        return pb.TrackInteractionResponse(interaction_id=outcome.interaction_id, duplicate=outcome.duplicate)

    async def TrackInteractions(self, request, context):
        items = request.interactions
        count = len(items)
        if not 0 < count <= domain.MAX_BATCH:
            raise InvalidArgument.field("interactions", f"between 1 and {domain.MAX_BATCH} items")
        now = datetime.now(UTC)
        ip, ip_hash = await self._ip_hash(context, now)
        accepted, rejected = self._events(items, current_caller(), ip, ip_hash, now)
        outcomes = await self.committer.submit([event for _, event in accepted]) if accepted else []
        response = pb.TrackInteractionsResponse(rejected=len(rejected))
        add = response.results.add
        duplicates = 0
        outcome_of = iter(outcomes)
        for index in range(count):  # results in request order, each field set only when not default
            violations = rejected.get(index) if rejected else None
            if violations is not None:
                add(index=index, error=InvalidArgument(violations).to_status())
                continue
            outcome = next(outcome_of)
            if outcome.duplicate:
                duplicates += 1
                add(index=index, interaction_id=outcome.interaction_id, duplicate=True)
            else:
                add(index=index, interaction_id=outcome.interaction_id)
        response.accepted = len(accepted) - duplicates
        response.duplicates = duplicates
        return response

    # ------------------------------------------------------------------ posts and shares

    async def CreatePost(self, request, context):
        post = request.post
        problems = domain.post_violations(post_id=post.post_id, title=post.title, url=post.url, check={"post_id", "title", "url"})
        if problems:
            raise InvalidArgument(problems)
        post_id = post.post_id or str(uuid.uuid4())

        async def work(conn: AsyncConnection) -> pb.CreatePostResponse:
            row = await store.insert_post(
                conn, post_id=post_id, title=post.title.strip(), url=post.url, published=post.published, now=datetime.now(UTC)
            )
            if row is None:
                raise AlreadyExists(f"post {post_id!r} already exists")
            return pb.CreatePostResponse(post=_post(row))

        return await run_idempotent(self._engine, IDEMPOTENCY, "CreatePost", request, pb.CreatePostResponse, work)

    async def UpdatePost(self, request, context):
        post = request.post
        _check_id("post.post_id", post.post_id)
        paths = set(request.update_mask.paths) or {"title", "url", "published"}
        unknown = paths - {"title", "url", "published"}
        if unknown:
            raise InvalidArgument.field("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        problems = domain.post_violations(post_id=post.post_id, title=post.title, url=post.url, check=paths)
        if problems:
            raise InvalidArgument(problems)
        changes = {path: (post.title.strip() if path == "title" else getattr(post, path)) for path in paths}

        async def work(conn: AsyncConnection) -> pb.UpdatePostResponse:
            return pb.UpdatePostResponse(post=_post(await store.update_post(conn, post.post_id, changes, datetime.now(UTC))))

        return await run_idempotent(self._engine, IDEMPOTENCY, "UpdatePost", request, pb.UpdatePostResponse, work)

    async def GetPost(self, request, context):
        _check_id("post_id", request.post_id)
        async with self._engine.connect() as conn:
            return pb.GetPostResponse(post=_post(await store.get_post(conn, request.post_id)))

    async def ListPosts(self, request, context):
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token, scope="posts")
        after = (datetime.fromisoformat(cursor[0]), cursor[1]) if cursor else None
        async with self._engine.connect() as conn:
            rows = await store.list_posts(conn, after, size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_token([rows[-1].create_time.isoformat(), rows[-1].post_id], scope="posts")
        return pb.ListPostsResponse(posts=[_post(r) for r in rows], next_page_token=token)

    async def TrackShare(self, request, context):
        violations = Violations()
        problem = domain.id_problem(request.post_id, required=True)
        violations.check(problem is None, "post_id", problem or "")
        violations.check(request.platform in domain.SHARE_PLATFORMS, "platform", f"one of {', '.join(domain.SHARE_PLATFORMS.values())}")
        for field in ("session_id", "user_id"):
            problem = domain.id_problem(getattr(request, field), required=False)
            violations.check(problem is None, field, problem or "")
        violations.raise_if_any()
        if request.request_id:
            validate_request_id(request.request_id)
        now = datetime.now(UTC)
        ip = caller_ip(context)
        hashes = (
            domain.ip_hash(await self._salts.salt(now.date()), ip),
            domain.ip_hash(await self._salts.salt(now.date() - timedelta(days=1)), ip),
        )
        limit = self._settings.share_limit_per_hour

        async def work(conn: AsyncConnection) -> pb.TrackShareResponse | store.ShareOutcome:
            if request.request_id:
                stored = await claim(conn, IDEMPOTENCY, "TrackShare", request.request_id, request)
                if stored is not None:
                    return pb.TrackShareResponse.FromString(stored)
            outcome = await store.record_share(
                conn,
                post_id=request.post_id,
                platform=request.platform,
                session_id=request.session_id or None,
                user_id=request.user_id or None,
                ip_hashes=hashes,
                limit=limit,
                now=now,
                decide=lambda recent, oldest: domain.share_decision(recent, oldest, now, limit),
            )
            if outcome.share_id is None:
                return outcome
            response = pb.TrackShareResponse(
                share_id=outcome.share_id, share_count=outcome.share_count, remaining_in_window=outcome.remaining
            )
            if request.request_id:
                await remember(conn, IDEMPOTENCY, "TrackShare", request.request_id, response)
            return response

        answer = await run_in_transaction(self._engine, work)
        if isinstance(answer, store.ShareOutcome):
            raise ResourceExhausted(
                f"at most {limit} shares per hour from one address",
                retry_after_seconds=answer.retry_after_seconds or 1.0,
                reason="SHARE_RATE_LIMITED",
            )
        return answer

    async def GetShareStats(self, request, context):
        _check_id("post_id", request.post_id)
        start, end = _range(request)
        async with self._engine.connect() as conn:
            total, by_platform, by_day = await store.share_stats(conn, request.post_id, start, end)
        return pb.GetShareStatsResponse(
            post_id=request.post_id,
            total=total,
            by_platform=[pb.PlatformCount(platform=p, count=n) for p, n in by_platform],
            by_day=[pb.DailyShareCount(day=d, platform=p, count=n) for d, p, n in by_day],
        )

    async def GetRateLimitStats(self, request, context):
        start, end = _range(request)
        async with self._engine.connect() as conn:
            days = await store.rate_limit_stats(conn, start, end)
        return pb.GetRateLimitStatsResponse(
            rejected=sum(r for _, r, _ in days),
            by_day=[pb.DailyRejections(day=d, rejected=r, accepted=a) for d, r, a in days],
        )

    # ------------------------------------------------------------------ analytics

    async def GetEngagementSummary(self, request, context):
        start, end = _range(request)
        async with self._engine.connect() as conn:
            by_type, authenticated, sessions = await store.engagement_summary(conn, start, end)
        total = sum(by_type.values())
        return pb.GetEngagementSummaryResponse(
            total=total,
            by_type=[pb.TypeCount(type=t, count=n) for t, n in by_type.items()],
            unique_sessions=sessions,
            authenticated=authenticated,
            authenticated_ratio=authenticated / total if total else 0.0,
        )

    async def GetEngagementTrend(self, request, context):
        start, end = _range(request)
        if request.type and request.type not in domain.INTERACTION_TYPES:
            raise InvalidArgument.field("type", "unknown interaction type")
        unit = "week" if request.granularity == pb.GRANULARITY_WEEK else "day"
        async with self._engine.connect() as conn:
            rows = await store.engagement_trend(conn, start, end, unit, request.type or None)
        points: dict[datetime, pb.TrendPoint] = {}
        for period, type_, events, authenticated in rows:
            point = points.setdefault(period, pb.TrendPoint(period_start=_stamp(period)))
            point.count += events
            point.authenticated += authenticated
            point.by_type.append(pb.TypeCount(type=type_, count=events))
        for point in points.values():
            point.authenticated_ratio = point.authenticated / point.count if point.count else 0.0
        return pb.GetEngagementTrendResponse(points=list(points.values()))

    async def GetFunnel(self, request, context):
        _check_id("product_id", request.product_id)
        start, end = _range(request)
        async with self._engine.connect() as conn:
            reached = await store.funnel(conn, request.product_id, start, end)
        steps = []
        for n, (step, sessions) in enumerate(zip(domain.FUNNEL, reached, strict=True)):
            previous = reached[n - 1] if n else sessions
            conversion = 1.0 if n == 0 else (sessions / previous if previous else 0.0)
            steps.append(pb.FunnelStep(type=step, sessions=sessions, conversion=conversion))
        return pb.GetFunnelResponse(product_id=request.product_id, steps=steps)

    async def ListTopProducts(self, request, context):
        _check_id("user_id", request.user_id, required=False)
        start, end = _range(request)
        if request.limit < 0:
            raise InvalidArgument.field("limit", "must not be negative")
        limit = min(request.limit or 10, MAX_TOP_PRODUCTS)
        async with self._engine.connect() as conn:
            rows = await store.top_products(conn, request.user_id or None, limit, start, end)
        return pb.ListTopProductsResponse(products=[pb.ProductCount(product_id=p, count=n) for p, n in rows])

    async def AggregatePopularity(self, request, context):
        as_of = _time(request.as_of_time, request.HasField("as_of_time")) or datetime.now(UTC)
        recompute = timedelta(seconds=self._settings.max_event_age_seconds)

        async def work(conn: AsyncConnection) -> pb.AggregatePopularityResponse:
            started = time.perf_counter()
            result = await store.aggregate(conn, as_of, recompute, self._settings.popularity_pairs_per_product)
            return pb.AggregatePopularityResponse(
                interactions_scanned=result.scanned,
                products_scored=result.products,
                pairs_updated=result.pairs,
                share_counts_repaired=result.repaired,
                duration_seconds=time.perf_counter() - started,
            )

        return await run_idempotent(
            self._engine, IDEMPOTENCY, "AggregatePopularity", request, pb.AggregatePopularityResponse, work
        )

    async def GetPopularity(self, request, context):
        _check_id("product_id", request.product_id)
        if request.paired_limit < 0:
            raise InvalidArgument.field("paired_limit", "must not be negative")
        async with self._engine.connect() as conn:
            row = await store.popularity(conn, request.product_id, min(request.paired_limit or 10, 100))
        if row is None:
            raise NotFound("product popularity", request.product_id)
        return pb.GetPopularityResponse(
            popularity=pb.Popularity(
                product_id=row.product_id,
                count_7d=row.count_7d,
                count_30d=row.count_30d,
                score=row.score,
                compute_time=_stamp(row.compute_time),
                paired=[pb.PairedProduct(product_id=p, percentage=pct, together_count=n) for p, pct, n in row.paired],
            )
        )

    async def GetRecommendations(self, request, context):
        if bool(request.user_id) == bool(request.session_id):
            raise InvalidArgument.field("user_id", "give exactly one of user_id and session_id")
        _check_id("user_id", request.user_id, required=False)
        _check_id("session_id", request.session_id, required=False)
        if request.user_id:
            require_self_or(current_caller(), request.user_id, *PRIVILEGED)
        if request.limit < 0:
            raise InvalidArgument.field("limit", "must not be negative")
        limit = min(request.limit or 10, MAX_RECOMMENDATIONS)
        async with self._engine.connect() as conn:
            picked = await store.recommendations(conn, request.user_id or None, request.session_id or None, limit)
        return pb.GetRecommendationsResponse(
            recommendations=[
                pb.Recommendation(
                    product_id=product,
                    score=score,
                    reason=(
                        f"people who interacted with {because} also interacted with this: {score:g}%"
                        if because
                        else f"popular now (score {score:g})"
                    ),
                )
                for product, score, because in picked
            ]
        )

    async def PurgeOldData(self, request, context):
        days = retention_days(request.retention_days, self._settings.retention_days)
        now = datetime.now(UTC)

        async def work(conn: AsyncConnection) -> pb.PurgeOldDataResponse:
            interactions, shares, rejections = await store.purge(
                conn, now - timedelta(days=days), self._limits.dedup_window, now
            )
            return pb.PurgeOldDataResponse(
                interactions_deleted=interactions, shares_deleted=shares, rate_limit_rows_deleted=rejections
            )

        return await run_idempotent(self._engine, IDEMPOTENCY, "PurgeOldData", request, pb.PurgeOldDataResponse, work)
