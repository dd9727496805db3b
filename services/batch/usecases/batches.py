"""A batch's lifecycle after orchestration confirmed it, and reassigning its supplier."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import FailedPrecondition
from services.batch import domain
from services.batch.domain import BatchStatus
from services.batch.records import Batch
from services.batch.store import batches, outbox
from services.batch.usecases.suppliers import assignable_supplier, require_reassignable

ADVANCEABLE_TO = (BatchStatus.IN_PRODUCTION, BatchStatus.COMPLETED)  # the rest is orchestration's
REASSIGNABLE_BATCH_STATUSES = (BatchStatus.FILLING, BatchStatus.CONFIRMED)


async def advance_batch(conn: AsyncConnection, batch_id: str, target: BatchStatus, now: datetime) -> Batch:
    """confirmed -> in_production -> completed; the batch's confirmed orders go into production with it."""
    batch = await batches.get_batch(conn, batch_id, for_update=True)
    current = batch.status
    if target not in ADVANCEABLE_TO or not domain.batch_transition_allowed(current, target):
        raise FailedPrecondition(
            f"a batch cannot go from {current} to {target}", reason="BAD_TRANSITION", subject=f"batches/{batch_id}"
        )
    await batches.set_batch_status(conn, batch.id, target, now)
    if target == BatchStatus.IN_PRODUCTION:
        await batches.start_production_of_orders(conn, batch.id, now)
    await outbox.record_batch_event(conn, "batch.status_changed", batch.id, now, previous_status=current.value)
    return await batches.get_batch(conn, batch_id)


async def assign_batch_supplier(
    conn: AsyncConnection, batch_id: str, supplier_id: str, priority: int, now: datetime
) -> Batch:
    """Moves the batch and its orders (those not assigned at a higher priority) to the supplier."""
    batch = await batches.get_batch(conn, batch_id, for_update=True)
    require_reassignable(batch.status, REASSIGNABLE_BATCH_STATUSES, "a batch", f"batches/{batch_id}")
    await assignable_supplier(conn, supplier_id, batch.category, batch.current_quantity)
    for order_id in await batches.reassign_batch_supplier(conn, batch.id, supplier_id, priority, now):
        await outbox.record_order_event(conn, "order.supplier_assigned", order_id, now)
    await outbox.record_batch_event(conn, "batch.status_changed", batch.id, now, change="supplier_assigned")
    return await batches.get_batch(conn, batch_id)
