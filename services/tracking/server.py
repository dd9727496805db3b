"""The TrackingService servicer: proto <-> records, who may ask what, one transaction per call.

Ingestion and shares go through their use cases (`services.tracking.usecases`);
conversions live in `services.tracking.messages`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import grpc
from loom.common.v1 import access_pb2
from loom.tracking.v1 import tracking_pb2 as pb
from loom.tracking.v1 import tracking_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import audit
from libs.auth import current_caller, require_self_or
from libs.client_ip import caller_ip
from libs.db import run_in_transaction
from libs.domain_errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound, ResourceExhausted
from libs.errors import status_of
from libs.idempotency import claim, remember, run_idempotent, validate_request_id
from libs.pagination import decode_token, encode_token, page_size
from libs.retention import retention_days
from services.tracking import domain
from services.tracking.enrichment import Enricher
from services.tracking.facts import WindowedFacts  # CountProductInteractions (rules' windowed facts)
from services.tracking.messages import (
    check_id,
    popularity_message,
    post_message,
    recommendation_message,
    time_or_none,
    time_range,
    timestamp,
)
from services.tracking.records import ShareOutcome
from services.tracking.settings import TrackingSettings
from services.tracking.store import aggregation, analytics, erasure, popularity, posts, retention, shares
from services.tracking.store.salts import SaltBook
from services.tracking.store.schema import IDEMPOTENCY
from services.tracking.usecases.ingestion import Ingestion
from services.tracking.usecases.shares import share_post

# The servicer context every method receives (client address, metadata).
Context: TypeAlias = grpc.aio.ServicerContext
PRIVILEGED = (access_pb2.ROLE_ADMIN, access_pb2.ROLE_SERVICE)
MAX_RECOMMENDATIONS = 100
MAX_TOP_PRODUCTS = 1000


class TrackingServicer(audit.AuditTrail, WindowedFacts, tracking_pb2_grpc.TrackingServiceServicer):
    def __init__(self, engine: AsyncEngine, settings: TrackingSettings, enricher: Enricher) -> None:
        self._engine = engine
        self._settings = settings
        self._salts = SaltBook(engine)
        self._ingestion = Ingestion(settings, enricher, self._salts)

    async def close(self) -> None:
        """Lets queued groups commit, then closes the writers' connections."""
        await self._ingestion.close()

    # ------------------------------------------------------------------ ingestion

    async def TrackInteraction(self, request: pb.TrackInteractionRequest, context: Context) -> pb.TrackInteractionResponse:
        now = datetime.now(UTC)
        ip = caller_ip(context)
        ip_hash = await self._ingestion.ip_hash(ip, now)
        accepted, rejected = self._ingestion.events((request.interaction,), current_caller(), ip, ip_hash, now)
        if rejected:
            raise InvalidArgument([FieldViolation(f"interaction.{v.field}", v.description) for v in rejected[0]])
        [outcome] = await self._ingestion.store([accepted[0][1]])
        return pb.TrackInteractionResponse(interaction_id=outcome.interaction_id, duplicate=outcome.duplicate)

    async def TrackInteractions(self, request: pb.TrackInteractionsRequest, context: Context) -> pb.TrackInteractionsResponse:
        items = request.interactions
        count = len(items)
        now = datetime.now(UTC)
        ip = caller_ip(context)
        ip_hash = await self._ingestion.ip_hash(ip, now)
        accepted, rejected = self._ingestion.events(items, current_caller(), ip, ip_hash, now)
        outcomes = await self._ingestion.store([event for _, event in accepted]) if accepted else []
        response = pb.TrackInteractionsResponse(rejected=len(rejected))
        add = response.results.add
        duplicates = 0
        outcome_of = iter(outcomes)
        for index in range(count):  # results in request order, each field set only when not default
            violations = rejected.get(index) if rejected else None
            if violations is not None:
                add(index=index, error=status_of(InvalidArgument(violations)))
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

    async def CreatePost(self, request: pb.CreatePostRequest, context: Context) -> pb.CreatePostResponse:
        post = request.post
        problems = domain.post_violations(post_id=post.post_id, title=post.title, url=post.url, check={"post_id", "title", "url"})
        if problems:
            raise InvalidArgument(problems)
        post_id = post.post_id or str(uuid.uuid4())

        async def work(conn: AsyncConnection) -> pb.CreatePostResponse:
            created = await posts.insert_post(
                conn, post_id=post_id, title=post.title.strip(), url=post.url, published=post.published, now=datetime.now(UTC)
            )
            if created is None:
                raise AlreadyExists(f"post {post_id!r} already exists")
            return pb.CreatePostResponse(post=post_message(created))

        return await run_idempotent(self._engine, IDEMPOTENCY, "CreatePost", request, pb.CreatePostResponse, work)

    async def UpdatePost(self, request: pb.UpdatePostRequest, context: Context) -> pb.UpdatePostResponse:
        post = request.post
        if not post.post_id:  # the proto checks its form but must allow it empty: CreatePost may leave it out
            raise InvalidArgument.field("post.post_id", "required")
        paths = set(request.update_mask.paths) or {"title", "url", "published"}
        unknown = paths - {"title", "url", "published"}
        if unknown:
            raise InvalidArgument.field("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        problems = domain.post_violations(post_id=post.post_id, title=post.title, url=post.url, check=paths)
        if problems:
            raise InvalidArgument(problems)
        changes = {path: (post.title.strip() if path == "title" else getattr(post, path)) for path in paths}

        async def work(conn: AsyncConnection) -> pb.UpdatePostResponse:
            updated = await posts.update_post(conn, post.post_id, changes, datetime.now(UTC))
            return pb.UpdatePostResponse(post=post_message(updated))

        return await run_idempotent(self._engine, IDEMPOTENCY, "UpdatePost", request, pb.UpdatePostResponse, work)

    async def GetPost(self, request: pb.GetPostRequest, context: Context) -> pb.GetPostResponse:
        async with self._engine.connect() as conn:
            return pb.GetPostResponse(post=post_message(await posts.get_post(conn, request.post_id)))

    async def ListPosts(self, request: pb.ListPostsRequest, context: Context) -> pb.ListPostsResponse:
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token, scope="posts")
        after = (datetime.fromisoformat(cursor[0]), cursor[1]) if cursor else None
        async with self._engine.connect() as conn:
            page = await posts.list_posts(conn, after, size + 1)
        token = ""
        if len(page) > size:
            page = page[:size]
            token = encode_token([page[-1].create_time.isoformat(), page[-1].post_id], scope="posts")
        return pb.ListPostsResponse(posts=[post_message(p) for p in page], next_page_token=token)

    async def TrackShare(self, request: pb.TrackShareRequest, context: Context) -> pb.TrackShareResponse:
        if request.request_id:
            validate_request_id(request.request_id)
        now = datetime.now(UTC)
        ip = caller_ip(context)
        hashes = (
            domain.ip_hash(await self._salts.salt(now.date()), ip),
            domain.ip_hash(await self._salts.salt(now.date() - timedelta(days=1)), ip),
        )
        limit = self._settings.share_limit_per_hour

        async def work(conn: AsyncConnection) -> pb.TrackShareResponse | ShareOutcome:
            if request.request_id:
                stored = await claim(conn, IDEMPOTENCY, "TrackShare", request.request_id, request)
                if stored is not None:
                    return pb.TrackShareResponse.FromString(stored)
            outcome = await share_post(
                conn,
                post_id=request.post_id,
                platform=request.platform,
                session_id=request.session_id or None,
                user_id=request.user_id or None,
                ip_hashes=hashes,
                limit=limit,
                now=now,
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
        if isinstance(answer, ShareOutcome):
            raise ResourceExhausted(
                f"at most {limit} shares per hour from one address",
                retry_after_seconds=answer.retry_after_seconds or 1.0,
                reason="SHARE_RATE_LIMITED",
            )
        return answer

    async def GetShareStats(self, request: pb.GetShareStatsRequest, context: Context) -> pb.GetShareStatsResponse:
        start, end = time_range(request)
        async with self._engine.connect() as conn:
            stats = await shares.share_stats(conn, request.post_id, start, end)
        platform = pb.SharePlatform.ValueType
        return pb.GetShareStatsResponse(
            post_id=request.post_id,
            total=stats.total,
            by_platform=[pb.PlatformCount(platform=platform(c.platform), count=c.count) for c in stats.by_platform],
            by_day=[pb.DailyShareCount(day=c.day, platform=platform(c.platform), count=c.count) for c in stats.by_day],
        )

    async def GetRateLimitStats(self, request: pb.GetRateLimitStatsRequest, context: Context) -> pb.GetRateLimitStatsResponse:
        start, end = time_range(request)
        async with self._engine.connect() as conn:
            days = await shares.rate_limit_stats(conn, start, end)
        return pb.GetRateLimitStatsResponse(
            rejected=sum(d.rejected for d in days),
            by_day=[pb.DailyRejections(day=d.day, rejected=d.rejected, accepted=d.accepted) for d in days],
        )

    # ------------------------------------------------------------------ analytics

    async def GetEngagementSummary(
        self, request: pb.GetEngagementSummaryRequest, context: Context
    ) -> pb.GetEngagementSummaryResponse:
        start, end = time_range(request)
        async with self._engine.connect() as conn:
            summary = await analytics.engagement_summary(conn, start, end)
        total = sum(summary.by_type.values())
        return pb.GetEngagementSummaryResponse(
            total=total,
            by_type=[pb.TypeCount(type=pb.InteractionType.ValueType(t), count=n) for t, n in summary.by_type.items()],
            unique_sessions=summary.unique_sessions,
            authenticated=summary.authenticated,
            authenticated_ratio=summary.authenticated / total if total else 0.0,
        )

    async def GetEngagementTrend(self, request: pb.GetEngagementTrendRequest, context: Context) -> pb.GetEngagementTrendResponse:
        start, end = time_range(request)
        unit = "week" if request.granularity == pb.GRANULARITY_WEEK else "day"
        async with self._engine.connect() as conn:
            counts = await analytics.engagement_trend(conn, start, end, unit, request.type or None)
        points: dict[datetime, pb.TrendPoint] = {}
        for c in counts:
            point = points.setdefault(c.period_start, pb.TrendPoint(period_start=timestamp(c.period_start)))
            point.count += c.events
            point.authenticated += c.authenticated
            point.by_type.append(pb.TypeCount(type=pb.InteractionType.ValueType(c.type), count=c.events))
        for point in points.values():
            point.authenticated_ratio = point.authenticated / point.count if point.count else 0.0
        return pb.GetEngagementTrendResponse(points=list(points.values()))

    async def GetFunnel(self, request: pb.GetFunnelRequest, context: Context) -> pb.GetFunnelResponse:
        start, end = time_range(request)
        async with self._engine.connect() as conn:
            reached = await analytics.funnel(conn, request.product_id, start, end)
        steps = []
        for n, (step, sessions) in enumerate(zip(domain.FUNNEL, reached, strict=True)):
            previous = reached[n - 1] if n else sessions
            conversion = 1.0 if n == 0 else (sessions / previous if previous else 0.0)
            steps.append(pb.FunnelStep(type=pb.InteractionType.ValueType(step), sessions=sessions, conversion=conversion))
        return pb.GetFunnelResponse(product_id=request.product_id, steps=steps)

    async def ListTopProducts(self, request: pb.ListTopProductsRequest, context: Context) -> pb.ListTopProductsResponse:
        check_id("user_id", request.user_id, required=False)
        start, end = time_range(request)
        limit = min(request.limit or 10, MAX_TOP_PRODUCTS)
        async with self._engine.connect() as conn:
            top = await analytics.top_products(conn, request.user_id or None, limit, start, end)
        return pb.ListTopProductsResponse(products=[pb.ProductCount(product_id=p.product_id, count=p.count) for p in top])

    async def AggregatePopularity(
        self, request: pb.AggregatePopularityRequest, context: Context
    ) -> pb.AggregatePopularityResponse:
        as_of = time_or_none(request.as_of_time, request.HasField("as_of_time")) or datetime.now(UTC)
        recompute = timedelta(seconds=self._settings.max_event_age_seconds)

        async def work(conn: AsyncConnection) -> pb.AggregatePopularityResponse:
            started = time.perf_counter()
            result = await aggregation.aggregate(conn, as_of, recompute, self._settings.popularity_pairs_per_product)
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

    async def GetPopularity(self, request: pb.GetPopularityRequest, context: Context) -> pb.GetPopularityResponse:
        async with self._engine.connect() as conn:
            scored = await popularity.popularity(conn, request.product_id, min(request.paired_limit or 10, 100))
        if scored is None:
            raise NotFound("product popularity", request.product_id)
        return pb.GetPopularityResponse(popularity=popularity_message(scored))

    async def GetRecommendations(self, request: pb.GetRecommendationsRequest, context: Context) -> pb.GetRecommendationsResponse:
        if bool(request.user_id) == bool(request.session_id):
            raise InvalidArgument.field("user_id", "give exactly one of user_id and session_id")
        check_id("user_id", request.user_id, required=False)
        check_id("session_id", request.session_id, required=False)
        if request.user_id:
            require_self_or(current_caller(), request.user_id, *PRIVILEGED)
        limit = min(request.limit or 10, MAX_RECOMMENDATIONS)
        async with self._engine.connect() as conn:
            picked = await popularity.recommendations(conn, request.user_id or None, request.session_id or None, limit)
        return pb.GetRecommendationsResponse(recommendations=[recommendation_message(r) for r in picked])

    async def PurgeOldData(self, request: pb.PurgeOldDataRequest, context: Context) -> pb.PurgeOldDataResponse:
        days = retention_days(request.retention_days, self._settings.retention_days)
        now = datetime.now(UTC)

        async def work(conn: AsyncConnection) -> pb.PurgeOldDataResponse:
            purged = await retention.purge(
                conn, now - timedelta(days=days), self._ingestion.limits.dedup_window, now,
                whole_months=self._settings.retention_whole_months,
            )
            return pb.PurgeOldDataResponse(
                interactions_deleted=purged.interactions, shares_deleted=purged.shares,
                rate_limit_rows_deleted=purged.rate_limit_rows,
                audit_events_deleted=await audit.purge(conn, self.audit_table, self._settings.audit_retention_days),
            )

        return await run_idempotent(self._engine, IDEMPOTENCY, "PurgeOldData", request, pb.PurgeOldDataResponse, work)

    # ------------------------------------------------------------------ privacy

    async def ErasePersonData(self, request: pb.ErasePersonDataRequest, context: Context) -> pb.ErasePersonDataResponse:
        check_id("user_id", request.user_id, required=True)

        async def work(conn: AsyncConnection) -> pb.ErasePersonDataResponse:
            erased = await erasure.erase_person(conn, request.user_id)
            return pb.ErasePersonDataResponse(
                sessions=erased.sessions,
                interactions_deleted=erased.interactions,
                shares_deleted=erased.shares,
                client_events_deleted=erased.client_events,
                dedup_windows_deleted=erased.dedup_windows,
                attributions_deleted=erased.attributions,
                rollup_rows_deleted=erased.rollup_rows,
                idempotency_records_deleted=erased.idempotency_records,
            )

        return await run_idempotent(self._engine, IDEMPOTENCY, "ErasePersonData", request, pb.ErasePersonDataResponse, work)
