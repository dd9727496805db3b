"""Orders: reading them, their status, the share of a batch they hold, their supplier."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch import domain
from services.batch.domain import OrderStatus
from services.batch.records import Order, Style
from services.batch.store.schema import after_key, fetch_all, fetch_by_id, fetch_one, parse_uuid


def order_record(row: Mapping[Any, Any]) -> Order:
    style = row["style"]
    return Order(
        id=str(row["id"]),
        buyer_id=row["buyer_id"],
        category=row["category"],
        quantity=row["quantity"],
        style=Style(style["style_count"], tuple(style["colors"]), tuple(style["sizes"]), style["notes"]),
        status=OrderStatus(row["status"]),
        status_reason=row["status_reason"],
        batch_id=str(row["batch_id"]),
        supplier_id=str(row["supplier_id"]),
        assignment_priority=row["assignment_priority"],
        price=domain.Price(
            currency=row["currency"],
            supplier_unit_price=row["supplier_unit_price"],
            margin_percent=row["margin_percent"],
            unit_price=row["unit_price"],
            quantity=row["quantity"],
            subtotal=row["subtotal"],
            margin_amount=row["margin_amount"],
            total=row["total"],
        ),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def get_order(conn: AsyncConnection, order_id: str, *, for_update: bool = False) -> Order:
    return order_record(await fetch_by_id(conn, "orders", "order", "order_id", order_id, for_update=for_update))


async def list_orders(
    conn: AsyncConnection, buyer_id: str, status: str, batch_id: str, after: list | None, limit: int
) -> list[Order]:
    rows = await fetch_all(
        conn,
        """
        SELECT * FROM batch.orders
        WHERE (:buyer_id = '' OR buyer_id = :buyer_id) AND (:status = '' OR status = :status)
          AND (CAST(:batch_id AS uuid) IS NULL OR batch_id = CAST(:batch_id AS uuid))
          AND (CAST(:after_time AS timestamptz) IS NULL OR (create_time, id) < (:after_time, CAST(:after_id AS uuid)))
        ORDER BY create_time DESC, id DESC LIMIT :limit
        """,
        buyer_id=buyer_id,
        status=status,
        batch_id=batch_id or None,
        **after_key(after),
        limit=limit,
    )
    return [order_record(r) for r in rows]


async def set_order_status(conn: AsyncConnection, order_id: str, status: OrderStatus, reason: str, now: datetime) -> None:
    await conn.execute(
        text("UPDATE batch.orders SET status = :status, status_reason = :reason, update_time = :now WHERE id = :id"),
        {"status": status.value, "reason": reason, "now": now, "id": order_id},
    )


async def release_contribution(conn: AsyncConnection, order_id: str, now: datetime) -> bool:
    """Gives the order's quantity and styles back to its batch; False (and nothing to keep:
    the caller's transaction must roll back) when the batch no longer fills."""
    released = await fetch_one(
        conn,
        """
        WITH c AS (DELETE FROM batch.contributions WHERE order_id = :order_id RETURNING batch_id, quantity, style_count)
        UPDATE batch.batches b
        SET current_quantity = b.current_quantity - c.quantity, style_count = b.style_count - c.style_count,
            order_count = b.order_count - 1, update_time = :now
        FROM c WHERE b.id = c.batch_id AND b.status = 'filling'
        RETURNING b.id
        """,
        order_id=order_id,
        now=now,
    )
    return released is not None


async def set_order_supplier(conn: AsyncConnection, order_id: str, supplier_id: str, priority: int, now: datetime) -> None:
    """An order awaiting a supplier is placed again once it has one."""
    await conn.execute(
        text(
            """
            UPDATE batch.orders SET supplier_id = :supplier_id, assignment_priority = :priority, update_time = :now,
                status = CASE WHEN status = 'awaiting_supplier' THEN 'placed' ELSE status END
            WHERE id = :id
            """
        ),
        {"supplier_id": parse_uuid("supplier_id", supplier_id), "priority": priority, "now": now, "id": order_id},
    )
