"""An order's workflow after placement: cancelling it, moving it on, reassigning its supplier."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import FailedPrecondition
from services.batch import domain
from services.batch.domain import OrderStatus
from services.batch.records import Order
from services.batch.store import orders, outbox
from services.batch.usecases.suppliers import assignable_supplier, require_reassignable

ASSIGNABLE_ORDER_STATUSES = (*domain.OPEN_ORDER_STATUSES, OrderStatus.CONFIRMED)


async def cancel_order(conn: AsyncConnection, order: Order, reason: str, now: datetime) -> Order:
    """Cancels an order (locked by the caller) whose batch still fills, giving its quantity and styles back."""
    if not domain.order_transition_allowed(order.status, OrderStatus.CANCELLED):
        raise FailedPrecondition(
            f"an order that is {order.status} cannot be cancelled", reason="BAD_TRANSITION", subject=f"orders/{order.id}"
        )
    if not await orders.release_contribution(conn, order.id, now):
        # Rolls the contribution's deletion back with the transaction.
        raise FailedPrecondition(
            "the order's batch is no longer filling", reason="BATCH_NOT_FILLING", subject=f"orders/{order.id}"
        )
    await orders.set_order_status(conn, order.id, OrderStatus.CANCELLED, reason, now)
    await outbox.record_order_event(conn, "order.cancelled", order.id, now, reason=reason)
    return await orders.get_order(conn, order.id)


async def update_order_status(
    conn: AsyncConnection, order_id: str, target: OrderStatus, reason: str, now: datetime
) -> Order:
    """Moves the order along its workflow (cancelling releases its share of the batch)."""
    order = await orders.get_order(conn, order_id, for_update=True)
    if target == OrderStatus.CANCELLED:
        return await cancel_order(conn, order, reason, now)
    current = order.status
    if not domain.order_transition_allowed(current, target):
        raise FailedPrecondition(
            f"an order cannot go from {current} to {target}", reason="BAD_TRANSITION", subject=f"orders/{order_id}"
        )
    await orders.set_order_status(conn, order.id, target, reason, now)
    await outbox.record_order_event(
        conn, "order.status_changed", order.id, now, previous_status=current.value, reason=reason
    )
    return await orders.get_order(conn, order_id)


def check_priority(assigned_priority: int, priority: int, subject: str) -> None:
    """An assignment never overrides one made with a higher priority."""
    if priority < assigned_priority:
        raise FailedPrecondition(
            f"a supplier was assigned with priority {assigned_priority}; {priority} does not override it",
            reason="LOWER_PRIORITY",
            subject=subject,
        )


async def assign_order_supplier(
    conn: AsyncConnection, order_id: str, supplier_id: str, priority: int, now: datetime
) -> Order:
    order = await orders.get_order(conn, order_id, for_update=True)
    require_reassignable(order.status, ASSIGNABLE_ORDER_STATUSES, "an order", f"orders/{order_id}")
    check_priority(order.assignment_priority, priority, f"orders/{order_id}")
    await assignable_supplier(conn, supplier_id, order.category, order.quantity)
    await orders.set_order_supplier(conn, order.id, supplier_id, priority, now)
    await outbox.record_order_event(conn, "order.supplier_assigned", order.id, now)
    return await orders.get_order(conn, order_id)
