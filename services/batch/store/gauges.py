"""What the business gauges read (services.batch.metrics samples it on a timer)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class GaugeSample:
    batches_by_status: dict[str, int]
    filling_at_most: tuple[int, ...]  # filling batches with fill <= 25%, 50%, 60%, 75%, 100%, and all
    outbox_pending: int
    outbox_oldest_age_seconds: float


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


async def sample(conn: AsyncConnection) -> GaugeSample:
    row = (await conn.execute(_SAMPLE)).one()
    return GaugeSample(
        batches_by_status=dict(row.statuses),
        filling_at_most=tuple(row.fill),
        outbox_pending=row.pending,
        outbox_oldest_age_seconds=float(row.oldest_age),
    )
