"""Batches: reading them, moving them along their lifecycle, reassigning their supplier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch.domain import BatchStatus
from services.batch.records import Batch
from services.batch.store.schema import after_key, fetch_all, fetch_by_id, parse_uuid


def batch_record(row: Mapping[Any, Any]) -> Batch:
    return Batch(
        id=str(row["id"]),
        category=row["category"],
        supplier_id=str(row["supplier_id"]),
        status=BatchStatus(row["status"]),
        target_quantity=row["target_quantity"],
        capacity=row["capacity"],
        current_quantity=row["current_quantity"],
        style_limit=row["style_limit"],
        style_count=row["style_count"],
        order_count=row["order_count"],
        window_open_time=row["window_open_time"],
        window_close_time=row["window_close_time"],
        needs_review=row["needs_review"],
        unit_price=row["unit_price"],
        supplier_order_number=row["supplier_order_number"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def get_batch(conn: AsyncConnection, batch_id: str, *, for_update: bool = False) -> Batch:
    return batch_record(await fetch_by_id(conn, "batches", "batch", "batch_id", batch_id, for_update=for_update))


async def get_batches(conn: AsyncConnection, batch_ids: Sequence[str]) -> list[Batch]:
    rows = await fetch_all(conn, "SELECT * FROM batch.batches WHERE id = ANY(CAST(:ids AS uuid[]))", ids=list(batch_ids))
    return [batch_record(r) for r in rows]


async def list_batches(
    conn: AsyncConnection, status: str, category: str, supplier_id: str, needs_review: bool,
    after: list | None, limit: int,
) -> list[Batch]:
    rows = await fetch_all(
        conn,
        """
        SELECT * FROM batch.batches
        WHERE (:status = '' OR status = :status) AND (:category = '' OR category = :category)
          AND (CAST(:supplier_id AS uuid) IS NULL OR supplier_id = CAST(:supplier_id AS uuid))
          AND (NOT :needs_review OR needs_review)
          AND (CAST(:after_time AS timestamptz) IS NULL OR (create_time, id) < (:after_time, CAST(:after_id AS uuid)))
        ORDER BY create_time DESC, id DESC LIMIT :limit
        """,
        status=status,
        category=category,
        supplier_id=parse_uuid("supplier_id", supplier_id) if supplier_id else None,
        needs_review=needs_review,
        **after_key(after),
        limit=limit,
    )
    return [batch_record(r) for r in rows]


async def set_batch_status(conn: AsyncConnection, batch_id: str, status: BatchStatus, now: datetime) -> None:
    await conn.execute(
        text("UPDATE batch.batches SET status = :status, update_time = :now WHERE id = :id"),
        {"status": status.value, "now": now, "id": batch_id},
    )


async def start_production_of_orders(conn: AsyncConnection, batch_id: str, now: datetime) -> None:
    """The batch's confirmed orders go into production, each with its status-changed event."""
    await conn.execute(
        text(
            """
            WITH o AS (
                UPDATE batch.orders SET status = 'in_production', update_time = :now
                WHERE batch_id = :id AND status = 'confirmed' RETURNING *
            )
            INSERT INTO batch.outbox (type, occurred_time, data)
            SELECT 'order.status_changed', :now,
                   json_build_object('order', batch.order_json(o::batch.orders), 'batch', batch.batch_json(b),
                                     'previous_status', 'confirmed')
            FROM o JOIN batch.batches b ON b.id = o.batch_id
            """
        ),
        {"now": now, "id": batch_id},
    )


async def reassign_batch_supplier(
    conn: AsyncConnection, batch_id: str, supplier_id: str, priority: int, now: datetime
) -> list[str]:
    """Moves the batch, and its open or confirmed orders assigned at no higher priority, to the
    supplier; the ids of the orders moved."""
    moved = await fetch_all(
        conn,
        """
        WITH b AS (UPDATE batch.batches SET supplier_id = :supplier_id, update_time = :now WHERE id = :batch_id),
        o AS (
            UPDATE batch.orders SET supplier_id = :supplier_id, assignment_priority = :priority, update_time = :now,
                status = CASE WHEN status = 'awaiting_supplier' THEN 'placed' ELSE status END
            WHERE batch_id = :batch_id AND status IN ('placed', 'awaiting_supplier', 'confirmed')
              AND assignment_priority <= :priority
            RETURNING id
        )
        SELECT id FROM o
        """,
        supplier_id=parse_uuid("supplier_id", supplier_id),
        priority=priority,
        now=now,
        batch_id=batch_id,
    )
    return [str(row["id"]) for row in moved]
