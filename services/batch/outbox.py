"""Delivers the outbox to the rules service: in order, at least once, with backoff.

Each round takes a transaction-scoped advisory lock (one dispatcher across
replicas), reads up to 100 pending events in id order, calls
rules.DeliverEvents and marks them delivered only after it answered OK. A
failure rolls back, so the same events are offered again after a backoff.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from loom.common.v1 import event_pb2
from loom.rules.v1 import rules_pb2, rules_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import tracing
from libs.tasks import wait_for_event
from services.batch.records import StoredEvent
from services.batch.store import outbox

log = structlog.get_logger("loom.batch.outbox")
BATCH_SIZE = 100
FIRST_BACKOFF_SECONDS = 0.2


def event_id(namespace: uuid.UUID, outbox_id: int) -> str:
    """The same for every delivery of one outbox row, unique to this database's outbox."""
    return str(uuid.uuid5(namespace, str(outbox_id)))


def event_message(event: StoredEvent) -> event_pb2.Event:
    """The event as delivered; a chain of rule executions that caused it goes in `data.causation`."""
    data = Struct()
    data.update({**event.data, "causation": event.causation} if event.causation else event.data)
    occurred = Timestamp()
    occurred.FromDatetime(event.occurred_time)
    return event_pb2.Event(
        event_id=event_id(event.namespace, event.id), type=event.type, source="batch", occurred_time=occurred, data=data,
        trace_parent=event.trace_parent,
    )


class OutboxDispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        rules: Callable[[], rules_pb2_grpc.RulesServiceStub],
        *,
        poll_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        self._engine = engine
        self._rules = rules
        self._poll_seconds = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Events were just committed in this process: deliver without waiting for the poll."""
        self._wake.set()

    async def dispatch_once(self) -> int:
        """Delivers the next batch of pending events; returns how many went."""
        async with self._engine.begin() as conn:
            if not await outbox.try_outbox_lock(conn):
                return 0
            pending = await outbox.pending_events(conn, BATCH_SIZE)
            if not pending:
                return 0
            with tracing.span(
                "batch.outbox.deliver", link_to=[e.trace_parent for e in pending], attributes={"loom.events": len(pending)}
            ):
                await self._rules().DeliverEvents(rules_pb2.DeliverEventsRequest(events=[event_message(e) for e in pending]))
            await outbox.mark_delivered(conn, [e.id for e in pending], datetime.now(UTC))
        return len(pending)

    async def run(self) -> None:
        backoff = 0.0
        while True:
            try:
                delivered = await self.dispatch_once()
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - rules or the database is down: try again later
                backoff = min(max(backoff * 2, FIRST_BACKOFF_SECONDS), self._max_backoff)
                log.warning("outbox delivery failed; retrying", error=type(error).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                continue
            if delivered == BATCH_SIZE:
                continue
            self._wake.clear()
            await wait_for_event(self._wake, self._poll_seconds)
