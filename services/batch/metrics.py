"""What the business watches in the batch service, for Prometheus.

Counters move where the thing happens (placement, orchestration); the gauges are
sampled from the database (`libs.sampling`: every replica reports the same values,
aggregate with max()).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch.records import OrchestrationCounts
from services.batch.store import gauges

ORDERS_PLACED = Counter("loom_batch_orders_placed_total", "Orders accepted (replays of a request id not counted).")
SUPPLIER_ORDERS = Counter("loom_batch_supplier_orders_total", "Supplier orders raised by confirming a batch.")
REFUNDS = Counter("loom_batch_refunds_total", "Orders refunded because their batch was cancelled.")
BATCHES = Gauge("loom_batch_batches", "Batches by status.", ["status"])
FILLING_BY_FILL = Gauge(
    "loom_batch_filling_batches_by_fill",
    "Filling batches whose fill (current/target) is at most `le`: a cumulative distribution like a histogram's buckets.",
    ["le"],
)
OUTBOX_PENDING = Gauge("loom_batch_outbox_pending_events", "Events written to the outbox and not yet delivered to rules.")
OUTBOX_OLDEST_AGE = Gauge(
    "loom_batch_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered outbox event (0 when none waits)."
)



def count_orchestration(counts: OrchestrationCounts) -> None:
    SUPPLIER_ORDERS.inc(counts.supplier_orders)
    REFUNDS.inc(counts.refunded)


def count_resolution(confirmed: bool, refunded: int) -> None:
    """An admin's review decision: a confirmation raises one supplier order."""
    SUPPLIER_ORDERS.inc(1 if confirmed else 0)
    REFUNDS.inc(refunded)


STATUSES = ("filling", "confirmed", "in_production", "completed", "cancelled")
FILL_BOUNDS = ("0.25", "0.5", "0.6", "0.75", "1", "+Inf")

async def sample(conn: AsyncConnection) -> None:
    found = await gauges.sample(conn)
    for status in STATUSES:
        BATCHES.labels(status).set(found.batches_by_status.get(status, 0))
    for bound, count in zip(FILL_BOUNDS, found.filling_at_most, strict=True):
        FILLING_BY_FILL.labels(bound).set(count)
    OUTBOX_PENDING.set(found.outbox_pending)
    OUTBOX_OLDEST_AGE.set(found.outbox_oldest_age_seconds)
