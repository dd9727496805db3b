"""Retention: what has aged out of the batch schema."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch.records import PurgeCounts


async def purge(
    conn: AsyncConnection, outbox_before: datetime, idempotency_before: datetime, snapshots_before: datetime
) -> PurgeCounts:
    """Deletes delivered outbox events, idempotency keys and price snapshots older than their cut-offs."""
    outbox = await conn.execute(
        text("DELETE FROM batch.outbox WHERE delivered_time IS NOT NULL AND delivered_time < :t"), {"t": outbox_before}
    )
    keys = await conn.execute(
        text("DELETE FROM batch.idempotency_keys WHERE create_time < :t"), {"t": idempotency_before}
    )
    snapshots = await conn.execute(
        text("DELETE FROM batch.price_snapshots WHERE capture_time < :t"), {"t": snapshots_before}
    )
    return PurgeCounts(outbox.rowcount, keys.rowcount, snapshots.rowcount)
