"""Ingestion: from a call's interaction messages to committed events (the hot path).

The salted hash of the caller's address (never the address itself), each item checked,
attributed (user id policy by role), enriched and turned into a domain.Event, then the
group commit (group_commit.py) stores them with other calls' events in one transaction.

`events` reads the Interaction messages directly instead of first converting them into
records: it runs once per event on the hottest path, where each extra object per event
showed in the tracking.ingest benchmarks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from loom.common.v1 import access_pb2
from loom.tracking.v1 import tracking_pb2 as pb

from libs.auth import Caller
from libs.domain_errors import FieldViolation
from services.tracking import domain, metrics
from services.tracking.domain import Agent, Event, IngestLimits, Outcome
from services.tracking.enrichment import Enricher
from services.tracking.group_commit import GroupCommitter
from services.tracking.ids import uuid7_batch
from services.tracking.settings import TrackingSettings
from services.tracking.store.interactions import InteractionWriter
from services.tracking.store.salts import SaltBook

MAX_REMEMBERED_IP_HASHES = 65536


class Ingestion:
    """One process's ingestion: its writers (each with its own connection) behind one group commit."""

    def __init__(self, settings: TrackingSettings, enricher: Enricher, salts: SaltBook) -> None:
        self._enricher = enricher
        self._salts = salts
        self._hashed_with: bytes | None = None  # the salt of the hashes below
        self._ip_hashes: dict[str, bytes] = {}  # a client calls from one address many times a day
        self.limits = IngestLimits(
            dedup_window=timedelta(seconds=settings.dedup_window_seconds),
            max_age=timedelta(seconds=settings.max_event_age_seconds),
            max_skew=timedelta(seconds=settings.max_clock_skew_seconds),
        )
        # The bootstrap resolves the database (embedded or configured) before any servicer exists.
        assert settings.database_url is not None
        self._writers = [
            InteractionWriter(
                settings.database_url, self.limits.dedup_window, prepared_statements=settings.db_prepared_statements
            )
            for _ in range(settings.ingest_writers)
        ]
        self.committer = GroupCommitter(
            [_measured(w.store) for w in self._writers],
            max_batch=settings.ingest_max_batch_events,
            delay=settings.ingest_commit_delay_ms / 1000,
            group_calls=settings.ingest_commit_group_calls,
        )

    async def close(self) -> None:
        """Lets queued groups commit, then closes the writers' connections."""
        await self.committer.close()
        for writer in self._writers:
            await writer.close()

    async def ip_hash(self, ip: str, now: datetime) -> bytes:
        """The address hashed with today's salt (remembered until the salt changes)."""
        salt = await self._salts.salt(now.date())
        if salt is not self._hashed_with or len(self._ip_hashes) >= MAX_REMEMBERED_IP_HASHES:
            # Forgotten with the salt: no older day's hash outlives it in memory either.
            self._hashed_with, self._ip_hashes = salt, {}
        hashed = self._ip_hashes.get(ip)
        if hashed is None:
            hashed = self._ip_hashes[ip] = domain.ip_hash(salt, ip)
        return hashed

    def events(
        self, items: Sequence[pb.Interaction], caller: Caller, ip: str, ip_hash: bytes, now: datetime
    ) -> tuple[list[tuple[int, Event]], dict[int, list[FieldViolation]]]:
        """The enriched events of a batch (with their indexes) and why the others are rejected.

        Runs per event, so whatever is the same for the whole batch (bounds, the caller's
        identity, the country, ids) is worked out once and each distinct user agent parsed once.
        """
        earliest, latest = now - self.limits.max_age, now + self.limits.max_skew
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
            user_id: str | None = item.user_id
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
        if rejected:
            metrics.REJECTED.inc(len(rejected))
        return accepted, rejected

    def _violations(self, item: pb.Interaction, user_id: str | None, now: datetime) -> list[FieldViolation]:
        has_time = item.HasField("occurred_time")
        return domain.interaction_violations(
            type=item.type, product_id=item.product_id, session_id=item.session_id, user_id=user_id or "",
            anonymous_id=item.anonymous_id, client_event_id=item.client_event_id,
            occurred_at=item.occurred_time.ToDatetime(tzinfo=UTC) if has_time else None,
            referrer=item.referrer, user_agent=item.user_agent, page=item.page, now=now, limits=self.limits,
        )

    async def store(self, events: list[Event]) -> list[Outcome]:
        """Each event's outcome once the transaction it went into has committed."""
        outcomes = await self.committer.submit(events)
        duplicates = sum(outcome.duplicate for outcome in outcomes)
        metrics.STORED.inc(len(outcomes) - duplicates)
        if duplicates:
            metrics.DUPLICATE.inc(duplicates)
        return outcomes


def _measured(store: Callable[[list[Event]], Awaitable[list[Outcome]]]) -> Callable[[list[Event]], Awaitable[list[Outcome]]]:
    async def measured(events: list[Event]) -> list[Outcome]:
        outcomes = await store(events)
        metrics.GROUP_COMMIT_EVENTS.observe(len(events))
        return outcomes

    return measured
