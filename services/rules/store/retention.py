"""Retention: what PurgeOldData deletes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import (
    delete,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules.store.schema import (
    events,
    executions,
    idempotency_keys,
    notification_reads,
    notifications,
)

# --- retention -----------------------------------------------------------------------------


async def purge_older_than(conn: AsyncConnection, days: int) -> dict[str, int]:
    """Deletes evaluated events, finished executions, notifications and idempotency keys older than `days`."""
    cutoff = func.now() - timedelta(days=days)
    counts = {}
    await conn.execute(
        delete(notification_reads).where(
            notification_reads.c.notification_id.in_(
                select(notifications.c.notification_id).where(notifications.c.create_time < cutoff)
            )
        )
    )
    counts["notifications_deleted"] = (
        await conn.execute(delete(notifications).where(notifications.c.create_time < cutoff))
    ).rowcount
    counts["executions_deleted"] = (await conn.execute(delete(executions).where(executions.c.finish_time < cutoff))).rowcount
    counts["events_deleted"] = (await conn.execute(delete(events).where(events.c.evaluated_time < cutoff))).rowcount
    counts["idempotency_rows_deleted"] = (
        await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.create_time < cutoff))
    ).rowcount
    return counts
