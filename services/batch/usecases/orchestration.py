"""Orchestration: every filling batch confirmed, flagged, cancelled or notified as its fill
and window say (domain.decide), set-based; and an admin's resolution of a flagged batch."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db import tune_for_bulk
from libs.domain_errors import FailedPrecondition
from services.batch import domain
from services.batch.domain import BatchStatus
from services.batch.records import OrchestrationCounts
from services.batch.store import batches, orchestration
from services.batch.store.orchestration import ONE_BATCH, PREDICATES
from services.batch.store.schema import advisory_xact_lock

ORCHESTRATE_LOCK = "batch.orchestrate"
LOW_FILL_REASON = "window closed below the review threshold"
REVIEW_CANCEL_REASON = "cancelled after admin review"


async def orchestrate(conn: AsyncConnection, thresholds: domain.Thresholds, now: datetime) -> OrchestrationCounts:
    """One run, one at a time across replicas; idempotent (a second run finds nothing to do)."""
    await advisory_xact_lock(conn, ORCHESTRATE_LOCK)
    await tune_for_bulk(conn)
    params = orchestration.threshold_params(thresholds, now)
    counts = OrchestrationCounts()
    counts.examined = await orchestration.count_filling(conn)
    counts.confirmed, counts.supplier_orders = await orchestration.confirm_batches(
        conn, PREDICATES[domain.Action.CONFIRM], params
    )
    counts.flagged_for_review = await orchestration.flag_batches(conn, domain.Action.FLAG_FOR_REVIEW, params)
    counts.cancelled, counts.refunded = await orchestration.cancel_batches(
        conn, PREDICATES[domain.Action.CANCEL], params, LOW_FILL_REASON
    )
    counts.nearing_target = await orchestration.flag_batches(conn, domain.Action.NEARING_TARGET, params)
    counts.closing_soon = await orchestration.flag_batches(conn, domain.Action.CLOSING_SOON, params)
    return counts


async def orchestrate_dry_run(conn: AsyncConnection, thresholds: domain.Thresholds, now: datetime) -> OrchestrationCounts:
    """The counts a real run would report now, changing nothing."""
    return await orchestration.would_orchestrate(conn, orchestration.threshold_params(thresholds, now))


async def resolve_review(conn: AsyncConnection, batch_id: str, confirm: bool, note: str, now: datetime) -> int:
    """Confirms or cancels one batch flagged for review; returns the orders refunded."""
    batch = await batches.get_batch(conn, batch_id, for_update=True)
    if batch.status != BatchStatus.FILLING or not batch.needs_review:
        raise FailedPrecondition(
            "only a filling batch flagged for review can be resolved", reason="NOT_IN_REVIEW", subject=f"batches/{batch_id}"
        )
    params = {"now": now, "id": batch.id}
    if confirm:
        await orchestration.confirm_batches(conn, ONE_BATCH, params)
        return 0
    _, refunded = await orchestration.cancel_batches(conn, ONE_BATCH, params, note or REVIEW_CANCEL_REASON)
    return refunded
