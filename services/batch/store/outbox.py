"""The outbox: events written in the transaction of the change they report, delivered later.

The set-based statements (placement, orchestration) write their events themselves;
the helpers here write one order's or one batch's event, and serve the dispatcher.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch.records import StoredEvent
from services.batch.store.schema import fetch_all

OUTBOX_LOCK = "batch.outbox"


# What each kind of single-row event carries, read as it is now (alias t is the row of :id).
EVENT_SOURCES = {
    "order": (
        "jsonb_build_object('order', batch.order_json(t), 'batch', batch.batch_json(b))",
        "batch.orders t JOIN batch.batches b ON b.id = t.batch_id",
    ),
    "batch": (
        "jsonb_build_object('batch', batch.batch_json(t), 'supplier', batch.supplier_json(s))",
        "batch.batches t JOIN batch.suppliers s ON s.id = t.supplier_id",
    ),
}


async def _record_event(
    conn: AsyncConnection, source: str, event_type: str, row_id: str, now: datetime, extra: dict[str, str]
) -> None:
    data, tables = EVENT_SOURCES[source]
    await conn.execute(
        text(
            f"""
            INSERT INTO batch.outbox (type, occurred_time, data)
            SELECT :type, :now, CAST({data} || CAST(:extra AS jsonb) AS json)
            FROM {tables} WHERE t.id = :id
            """
        ),
        {"type": event_type, "now": now, "id": row_id, "extra": json.dumps(extra)},
    )


async def record_order_event(conn: AsyncConnection, event_type: str, order_id: str, now: datetime, **extra: str) -> None:
    """An event carrying the order and its batch as they are now, plus `extra` fields."""
    await _record_event(conn, "order", event_type, order_id, now, extra)


async def record_batch_event(conn: AsyncConnection, event_type: str, batch_id: str, now: datetime, **extra: str) -> None:
    """An event carrying the batch and its supplier as they are now, plus `extra` fields."""
    await _record_event(conn, "batch", event_type, batch_id, now, extra)


async def pending_events(conn: AsyncConnection, limit: int) -> list[StoredEvent]:
    """The oldest undelivered events, locked until the transaction ends."""
    rows = await fetch_all(
        conn,
        "SELECT o.id, n.namespace, o.type, o.occurred_time, o.data, o.trace_parent, o.causation "
        "FROM batch.outbox o, batch.outbox_namespace n "
        "WHERE o.delivered_time IS NULL ORDER BY o.id LIMIT :limit FOR UPDATE OF o",
        limit=limit,
    )
    return [
        StoredEvent(
            r["id"], r["namespace"], r["type"], r["occurred_time"], r["data"], r["trace_parent"] or "", r["causation"] or []
        )
        for r in rows
    ]


async def mark_delivered(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    await conn.execute(
        text("UPDATE batch.outbox SET delivered_time = :now WHERE id = ANY(:ids)"), {"now": now, "ids": list(ids)}
    )


async def try_outbox_lock(conn: AsyncConnection) -> bool:
    """One dispatcher (across replicas) delivers at a time, so events leave in order."""
    return (
        await conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": OUTBOX_LOCK})
    ).scalar_one()
