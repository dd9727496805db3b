"""What the business watches in the batch service, for Prometheus.

Counters move where the thing happens (placement, orchestration); the gauges are
sampled from the database (`libs.sampling`: every replica reports the same values,
aggregate with max()).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

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

STATUSES = ("filling", "confirmed", "in_production", "completed", "cancelled")
FILL_BOUNDS = ("0.25", "0.5", "0.6", "0.75", "1", "+Inf")

_SAMPLE = text(
    """
    SELECT
      (SELECT coalesce(json_object_agg(status, n), '{}') FROM
         (SELECT status, count(*) AS n FROM batch.batches GROUP BY status) s) AS statuses,
      (SELECT json_build_array(
         count(*) FILTER (WHERE b.current_quantity * 4 <= b.target_quantity),
         count(*) FILTER (WHERE b.current_quantity * 2 <= b.target_quantity),
         count(*) FILTER (WHERE b.current_quantity * 10 <= b.target_quantity * 6),
         count(*) FILTER (WHERE b.current_quantity * 4 <= b.target_quantity * 3),
         count(*) FILTER (WHERE b.current_quantity <= b.target_quantity),
         count(*))
       FROM batch.filling_batches f JOIN batch.batches b USING (id)) AS fill,
      (SELECT count(*) FROM batch.outbox WHERE delivered_time IS NULL) AS pending,
      (SELECT coalesce(extract(epoch FROM now() - min(occurred_time)), 0)
         FROM batch.outbox WHERE delivered_time IS NULL) AS oldest_age
    """
)


async def sample(conn: AsyncConnection) -> None:
    row = (await conn.execute(_SAMPLE)).one()
    for status in STATUSES:
        BATCHES.labels(status).set(row.statuses.get(status, 0))
    for bound, count in zip(FILL_BOUNDS, row.fill, strict=True):
        FILLING_BY_FILL.labels(bound).set(count)
    OUTBOX_PENDING.set(row.pending)
    OUTBOX_OLDEST_AGE.set(float(row.oldest_age))
