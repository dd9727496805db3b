"""Starting a backfill's slots: as many as its concurrency allows, earliest first,
meeting the job's own runs under the overlap policy.

Slots of one backfill never count as overlapping each other (the concurrency is
the operator's explicit allowance); against the job's own runs in progress the
policy decides: ALLOW_ALL starts anyway, SKIP records the slots it would have
started as skipped, the buffers wait (and the job's waiting firings go first),
CANCEL_OTHER asks the job's run to stop and waits.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.backfills import BackfillState, SlotCounts, final_state
from services.scheduler.domain.policies import OverlapPolicy
from services.scheduler.store import backfills as backfill_store
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import JobRecord, Runner, RunRecord
from services.scheduler.store.tables import backfills


async def _locked(conn: AsyncConnection, backfill_id: uuid.UUID) -> Row | None:
    """The running backfill's row, locked: serialises whoever fills it up."""
    row = (await conn.execute(select(backfills).where(backfills.c.id == backfill_id).with_for_update())).first()
    return row if row is not None and row.state == BackfillState.RUNNING.value else None


def _policy(row: Row, job: JobRecord) -> OverlapPolicy:
    return OverlapPolicy(row.overlap_policy) if row.overlap_policy else job.overlap_policy


async def replace_ended_slot(conn: AsyncConnection, backfill_id: uuid.UUID, job: JobRecord,
                             runner: Runner) -> list[RunRecord] | None:
    """A slot ended: the next one takes its place when the job has nothing of its own
    going on (one statement, the common case). None when the backfill needs a full
    decision (start_slots, in a transaction of its own)."""
    started = await backfill_store.replace_slot(conn, backfill_id, job.overlap_policy, runner)
    return [started] if started else None


async def start_slots(conn: AsyncConnection, backfill_id: uuid.UUID, job: JobRecord, runner: Runner) -> list[RunRecord]:
    """Starts what the backfill has room for (in the caller's transaction), and ends
    the backfill when no slot is left pending."""
    row = await _locked(conn, backfill_id)
    return await _fill(conn, row, job, runner) if row is not None else []


async def _fill(conn: AsyncConnection, row: Row, job: JobRecord, runner: Runner) -> list[RunRecord]:
    backfill_id = row.id
    running_slots = await backfill_store.running_slots(conn, backfill_id)
    free = row.max_concurrency - running_slots
    policy = _policy(row, job)
    started: list[RunRecord] = []
    if free > 0:
        running, waiting = ([], []) if policy == OverlapPolicy.ALLOW_ALL else (
            await run_store.in_progress(conn, job.name, with_slots=False)
        )
        if running and policy == OverlapPolicy.SKIP:
            await backfill_store.skip_slots(
                conn, backfill_id, free, f"overlap policy SKIP: run {running[0]} was still in progress"
            )
        elif running and policy == OverlapPolicy.CANCEL_OTHER:
            await run_store.cancel_runs(conn, running, f"overlap policy CANCEL_OTHER: cancelled by backfill {backfill_id}")
        elif not running and not waiting:
            started = await backfill_store.start_slots(conn, backfill_id, free, runner)
    if not started and running_slots == 0:
        counts = (await backfill_store.slot_counts(conn, [backfill_id])).get(backfill_id, SlotCounts())
        state = final_state(counts, cancelled=False)
        if state is not None:
            await backfill_store.finish_backfill(conn, backfill_id, state)
    return started


async def resume(conn: AsyncConnection, backfill_id: uuid.UUID, job: JobRecord, runner: Runner) -> list[RunRecord]:
    """The leader's tick: slots a dead replica cut short wait again, then start what fits."""
    await backfill_store.requeue_interrupted(conn, backfill_id, runner)
    return await start_slots(conn, backfill_id, job, runner)
