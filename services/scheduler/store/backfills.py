"""scheduler.backfills and their slots: each slot is a job run (trigger 'backfill')
that waits queued until the backfill's concurrency lets it start."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, and_, func, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.backfills import BackfillState, SlotCounts
from services.scheduler.domain.policies import OverlapPolicy
from services.scheduler.domain.runs import RunStatus, TriggerKind
from services.scheduler.store.records import BackfillRecord, Runner, RunRecord
from services.scheduler.store.runs import QUEUED, RUNNING, run_record, run_values
from services.scheduler.store.tables import backfills, job_runs

# A slot's target request id is derived from (job, slot): a backfill repeated over the
# same range replays at the target instead of doing the work twice.
SLOT_NAMESPACE = uuid.UUID("5b1c3f0e-7a52-4c61-9d59-3c2f1b8e0a11")


def slot_request_id(job_name: str, slot: datetime) -> str:
    return str(uuid.uuid5(SLOT_NAMESPACE, f"{job_name}@{slot.isoformat()}"))


def _record(row: Row, counts: SlotCounts) -> BackfillRecord:
    return BackfillRecord(
        id=row.id,
        job_name=row.job_name,
        start_time=row.start_time,
        end_time=row.end_time,
        max_concurrency=row.max_concurrency,
        overlap_policy=OverlapPolicy(row.overlap_policy) if row.overlap_policy else None,
        state=BackfillState(row.state),
        slots=row.slots,
        create_time=row.create_time,
        finish_time=row.finish_time,
        counts=counts,
    )


async def insert_backfill(
    conn: AsyncConnection,
    *,
    job_name: str,
    start: datetime,
    end: datetime,
    max_concurrency: int,
    overlap_policy: OverlapPolicy | None,
    slots: Sequence[datetime],
    runner: Runner,
) -> uuid.UUID:
    """The backfill and one queued run per slot. A slot that already succeeded in an
    earlier backfill of the job is recorded skipped, naming that run."""
    backfill_id = uuid.uuid4()
    await conn.execute(
        insert(backfills).values(
            id=backfill_id, job_name=job_name, start_time=start, end_time=end, max_concurrency=max_concurrency,
            overlap_policy=overlap_policy.value if overlap_policy else None, state=BackfillState.RUNNING.value,
            slots=len(slots), create_time=func.now(),
        )
    )
    done = dict(
        (
            await conn.execute(
                select(job_runs.c.scheduled_time, job_runs.c.id).where(
                    job_runs.c.job_name == job_name,
                    job_runs.c.backfill_id.is_not(None),
                    job_runs.c.status == RunStatus.SUCCEEDED.value,
                    job_runs.c.scheduled_time >= start,
                    job_runs.c.scheduled_time < end,
                )
            )
        ).all()
    )
    rows = []
    for slot in slots:
        already = done.get(slot)
        reason = f"slot already succeeded (run {already})" if already else ""
        rows.append(
            run_values(
                job_name=job_name, trigger=TriggerKind.BACKFILL,
                status=RunStatus.SKIPPED if already else RunStatus.QUEUED, runner=runner, scheduled_time=slot,
                target_request_id=slot_request_id(job_name, slot), backfill_id=backfill_id,
                error=f"skipped: {reason}" if already else "", decision=reason,
            )
        )
    for chunk in range(0, len(rows), 1000):
        await conn.execute(insert(job_runs).values(rows[chunk:chunk + 1000]))
    return backfill_id


async def running_backfills(conn: AsyncConnection) -> list[BackfillRecord]:
    rows = list(await conn.execute(select(backfills).where(backfills.c.state == BackfillState.RUNNING.value)
                                   .order_by(backfills.c.create_time)))
    counts = await slot_counts(conn, [row.id for row in rows])
    return [_record(row, counts.get(row.id, SlotCounts())) for row in rows]


async def get_backfill(conn: AsyncConnection, backfill_id: uuid.UUID) -> BackfillRecord | None:
    row = (await conn.execute(select(backfills).where(backfills.c.id == backfill_id))).first()
    if row is None:
        return None
    return _record(row, (await slot_counts(conn, [row.id])).get(row.id, SlotCounts()))


async def list_backfills(
    conn: AsyncConnection, *, job_name: str, cursor: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[BackfillRecord]:
    conditions = []
    if job_name:
        conditions.append(backfills.c.job_name == job_name)
    if cursor is not None:
        conditions.append(tuple_(backfills.c.create_time, backfills.c.id) < tuple_(*cursor))
    rows = list(
        await conn.execute(
            select(backfills).where(and_(True, *conditions))
            .order_by(backfills.c.create_time.desc(), backfills.c.id.desc()).limit(limit)
        )
    )
    counts = await slot_counts(conn, [row.id for row in rows])
    return [_record(row, counts.get(row.id, SlotCounts())) for row in rows]


async def slot_counts(conn: AsyncConnection, backfill_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SlotCounts]:
    """Each slot counted by its latest attempt."""
    if not backfill_ids:
        return {}
    latest = (
        select(job_runs.c.backfill_id, job_runs.c.status)
        .where(job_runs.c.backfill_id.in_(list(backfill_ids)), job_runs.c.retry_run_id.is_(None))
        .subquery()
    )
    rows = await conn.execute(
        select(latest.c.backfill_id, latest.c.status, func.count()).group_by(latest.c.backfill_id, latest.c.status)
    )
    tallies: dict[uuid.UUID, dict[str, int]] = {}
    for backfill_id, status, count in rows:
        bucket = {
            RunStatus.SUCCEEDED.value: "succeeded", RunStatus.DEAD_LETTERED.value: "failed",
            RunStatus.SKIPPED.value: "skipped", RunStatus.CANCELLED.value: "cancelled",
        }.get(status, "pending")
        tally = tallies.setdefault(backfill_id, {})
        tally[bucket] = tally.get(bucket, 0) + count
    return {backfill_id: SlotCounts(**tally) for backfill_id, tally in tallies.items()}


async def running_slots(conn: AsyncConnection, backfill_id: uuid.UUID) -> int:
    query = select(func.count()).where(job_runs.c.backfill_id == backfill_id, job_runs.c.status == RUNNING)
    return (await conn.execute(query)).scalar_one()


# A slot ended: its successor starts in its place, in one statement built once (the
# hot path of a backfill). None starts once the backfill has ended, nor — unless the
# overlap policy is ALLOW_ALL — while the job has a run of its own going or waiting.
_REPLACE_SLOT = text(
    """
    UPDATE scheduler.job_runs
       SET status = 'running', runner = :runner, runner_key = :runner_key, start_time = clock_timestamp()
     WHERE id = (
        SELECT slot.id FROM scheduler.job_runs slot
         WHERE slot.backfill_id = :backfill_id AND slot.status = 'queued'
           AND EXISTS (
               SELECT 1 FROM scheduler.backfills b
                WHERE b.id = :backfill_id AND b.state = 'running'
                  AND (coalesce(b.overlap_policy, :job_policy) = 'allow_all' OR NOT EXISTS (
                       SELECT 1 FROM scheduler.job_runs own
                        WHERE own.job_name = b.job_name AND own.backfill_id IS NULL
                          AND own.status IN ('running', 'queued'))))
         ORDER BY slot.scheduled_time, slot.attempt
         LIMIT 1
           FOR UPDATE OF slot SKIP LOCKED)
    RETURNING *
    """
)


async def replace_slot(
    conn: AsyncConnection, backfill_id: uuid.UUID, job_policy: OverlapPolicy, runner: Runner
) -> RunRecord | None:
    """Starts the backfill's next waiting slot in place of one that ended. Needs no lock
    on the backfill: an ending slot starts at most one, so the running count never
    grows, and whoever fills the backfill up (start_slots) counts committed rows."""
    row = (await conn.execute(_REPLACE_SLOT, {
        "runner": runner.name, "runner_key": runner.key, "backfill_id": backfill_id, "job_policy": job_policy.value,
    })).first()
    return run_record(row) if row else None


async def start_slots(conn: AsyncConnection, backfill_id: uuid.UUID, count: int, runner: Runner) -> list[RunRecord]:
    """Starts up to `count` waiting slots, earliest first (locked rows are another
    claimer's and skipped)."""
    if count <= 0:
        return []
    waiting = (
        select(job_runs.c.id)
        .where(job_runs.c.backfill_id == backfill_id, job_runs.c.status == QUEUED)
        .order_by(job_runs.c.scheduled_time, job_runs.c.attempt)
        .limit(count)
        .with_for_update(skip_locked=True)
    )
    rows = await conn.execute(
        update(job_runs)
        .where(job_runs.c.id.in_(waiting.scalar_subquery()))
        .values(status=RUNNING, runner=runner.name, runner_key=runner.key, start_time=func.clock_timestamp())
        .returning(job_runs)
    )
    return sorted((run_record(row) for row in rows), key=lambda run: run.scheduled_time or run.start_time)


async def skip_slots(conn: AsyncConnection, backfill_id: uuid.UUID, count: int, reason: str) -> int:
    waiting = (
        select(job_runs.c.id)
        .where(job_runs.c.backfill_id == backfill_id, job_runs.c.status == QUEUED)
        .order_by(job_runs.c.scheduled_time)
        .limit(count)
        .with_for_update(skip_locked=True)
    )
    result = await conn.execute(
        update(job_runs)
        .where(job_runs.c.id.in_(waiting.scalar_subquery()))
        .values(status=RunStatus.SKIPPED.value, finish_time=func.clock_timestamp(), duration_seconds=0.0,
                error=f"skipped: {reason}", decision=reason)
    )
    return result.rowcount


async def requeue_interrupted(conn: AsyncConnection, backfill_id: uuid.UUID, runner: Runner) -> int:
    """Slots cut short by a replica that died wait again, as a further attempt with the
    same request id (the target replays it if the cut-short call had finished)."""
    interrupted = list(
        await conn.execute(
            select(job_runs)
            .where(job_runs.c.backfill_id == backfill_id, job_runs.c.status == RunStatus.INTERRUPTED.value,
                   job_runs.c.retry_run_id.is_(None))
            .with_for_update(skip_locked=True)
        )
    )
    for row in interrupted:
        values = run_values(
            job_name=row.job_name, trigger=TriggerKind.RETRY, status=RunStatus.QUEUED, runner=runner,
            attempt=row.attempt + 1, firing_id=row.firing_id, target_request_id=row.target_request_id,
            scheduled_time=row.scheduled_time, params=row.params, backfill_id=backfill_id,
        )
        await conn.execute(insert(job_runs).values(values))
        await conn.execute(update(job_runs).where(job_runs.c.id == row.id).values(retry_run_id=values["id"]))
    return len(interrupted)


async def finish_backfill(conn: AsyncConnection, backfill_id: uuid.UUID, state: BackfillState) -> None:
    await conn.execute(
        update(backfills)
        .where(backfills.c.id == backfill_id, backfills.c.state == BackfillState.RUNNING.value)
        .values(state=state.value, finish_time=func.now())
    )


async def cancel_backfill(conn: AsyncConnection, backfill_id: uuid.UUID, reason: str) -> bool:
    """Cancels a running backfill: waiting slots at once, running ones on request.
    False when it had already ended."""
    changed = await conn.execute(
        update(backfills)
        .where(backfills.c.id == backfill_id, backfills.c.state == BackfillState.RUNNING.value)
        .values(state=BackfillState.CANCELLED.value, finish_time=func.now())
    )
    if not changed.rowcount:
        return False
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.backfill_id == backfill_id, job_runs.c.status == QUEUED)
        .values(status=RunStatus.CANCELLED.value, finish_time=func.clock_timestamp(), duration_seconds=0.0,
                error=f"cancelled: {reason}", decision=reason)
    )
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.backfill_id == backfill_id, job_runs.c.status == RUNNING)
        .values(cancel_requested=True, decision=reason)
    )
    return True
