"""scheduler.job_runs, the job-run log: one row per attempt, and per firing a policy
did not run (skipped, queued, cancelled), so no decision is ever silent."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Row, and_, bindparam, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB, distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from libs import audit
from services.scheduler.domain.runs import RunStatus, TriggerKind
from services.scheduler.store import REPLICA_LOCK_NAMESPACE
from services.scheduler.store.records import Runner, RunRecord, Summary
from services.scheduler.store.tables import audit_events, backfills, idempotency_keys, job_runs, jobs

RUNNING, QUEUED = RunStatus.RUNNING.value, RunStatus.QUEUED.value


def run_record(row: Row) -> RunRecord:
    return RunRecord(
        id=row.id,
        job_name=row.job_name,
        firing_id=row.firing_id,
        trigger=TriggerKind(row.trigger),
        attempt=row.attempt,
        status=RunStatus(row.status),
        scheduled_time=row.scheduled_time,
        start_time=row.start_time,
        finish_time=row.finish_time,
        duration_seconds=row.duration_seconds,
        result=row.result,
        error=row.error,
        params=dict(row.params),
        runner=row.runner,
        target_request_id=row.target_request_id,
        next_attempt_time=row.next_attempt_time,
        backfill_id=row.backfill_id,
        decision=row.decision,
    )


def _records(rows) -> list[RunRecord]:
    return [run_record(row) for row in rows]


def run_values(
    *,
    job_name: str,
    trigger: TriggerKind,
    status: RunStatus,
    runner: Runner,
    attempt: int = 1,
    firing_id: uuid.UUID | None = None,
    target_request_id: str | None = None,
    scheduled_time: datetime | None = None,
    params: Mapping[str, Any] | None = None,
    error: str = "",
    decision: str = "",
    backfill_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    run_id = uuid.uuid4()
    finished = status not in (RunStatus.RUNNING, RunStatus.QUEUED)
    return {
        "id": run_id,
        "job_name": job_name,
        "firing_id": firing_id or run_id,
        "trigger": trigger.value,
        "attempt": attempt,
        "status": status.value,
        "scheduled_time": scheduled_time,
        "start_time": func.clock_timestamp(),
        "finish_time": func.clock_timestamp() if finished else None,
        "duration_seconds": 0.0 if finished else None,
        "error": error,
        "params": dict(params or {}),
        "runner": runner.name,
        "runner_key": runner.key,
        "target_request_id": target_request_id or str(uuid.uuid4()),
        "backfill_id": backfill_id,
        "decision": decision,
        "cancel_requested": False,
    }


async def insert_run(conn: AsyncConnection, **values: Any) -> RunRecord | None:
    """Adds a run (see run_values); None when this schedule firing was already
    recorded (by another replica, or an earlier leader)."""
    statement = insert(job_runs).values(run_values(**values))
    if values["trigger"] == TriggerKind.SCHEDULE:
        statement = statement.on_conflict_do_nothing(
            index_elements=["job_name", "scheduled_time"], index_where=text("trigger = 'schedule'")
        )
    returning = statement.returning(job_runs)
    row = (await conn.execute(returning)).first()
    return run_record(row) if row else None


async def insert_skipped_firings(
    conn: AsyncConnection, job_name: str, runner: Runner, firings: Sequence[tuple[datetime, str]]
) -> None:
    """Schedule firings a policy did not run, each a row with its reason."""
    if not firings:
        return
    rows = [
        run_values(job_name=job_name, trigger=TriggerKind.SCHEDULE, status=RunStatus.SKIPPED, runner=runner,
                   scheduled_time=time, error=f"skipped: {reason}", decision=reason)
        for time, reason in firings
    ]
    await conn.execute(
        insert(job_runs).values(rows).on_conflict_do_nothing(
            index_elements=["job_name", "scheduled_time"], index_where=text("trigger = 'schedule'")
        )
    )


async def in_progress(conn: AsyncConnection, job_name: str, *, with_slots: bool = True) -> tuple[list[str], list[str]]:
    """Ids of the job's running runs (backfill slots among them unless `with_slots`
    is false), and of its own firings waiting, oldest first (backfill slots wait on
    their backfill, not the job)."""
    running = job_runs.c.status == RUNNING
    if not with_slots:
        running = and_(running, job_runs.c.backfill_id.is_(None))
    rows = await conn.execute(
        select(job_runs.c.id, job_runs.c.status)
        .where(
            job_runs.c.job_name == job_name,
            or_(running, and_(job_runs.c.status == QUEUED, job_runs.c.backfill_id.is_(None))),
        )
        .order_by(job_runs.c.start_time, job_runs.c.id)
    )
    found: dict[str, list[str]] = {RUNNING: [], QUEUED: []}
    for row in rows:
        found[row.status].append(str(row.id))
    return found[RUNNING], found[QUEUED]


async def cancel_runs(conn: AsyncConnection, run_ids: Sequence[str], reason: str) -> None:
    """Waiting runs are cancelled at once; running ones are asked to stop (their runner
    sees the request on its next tick and records them cancelled)."""
    ids = [uuid.UUID(run_id) for run_id in run_ids]
    if not ids:
        return
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.id.in_(ids), job_runs.c.status == QUEUED)
        .values(status=RunStatus.CANCELLED.value, finish_time=func.clock_timestamp(), duration_seconds=0.0,
                error=f"cancelled: {reason}", decision=reason)
    )
    await conn.execute(
        update(job_runs)
        .where(job_runs.c.id.in_(ids), job_runs.c.status == RUNNING)
        .values(cancel_requested=True, decision=reason)
    )


async def cancel_requested(conn: AsyncConnection, runner: Runner) -> list[uuid.UUID]:
    """This replica's running attempts that were asked to stop."""
    query = select(job_runs.c.id).where(
        job_runs.c.runner == runner.name, job_runs.c.status == RUNNING, job_runs.c.cancel_requested
    )
    return list((await conn.execute(query)).scalars())


async def start_waiting_firing(conn: AsyncConnection, job_name: str, runner: Runner) -> RunRecord | None:
    """Starts the job's oldest waiting firing (not a backfill slot) when none of its
    runs is in progress. The caller holds the job's lock."""
    busy = select(job_runs.c.id).where(job_runs.c.job_name == job_name, job_runs.c.status == RUNNING).exists()
    oldest = (
        select(job_runs.c.id)
        .where(job_runs.c.job_name == job_name, job_runs.c.status == QUEUED, job_runs.c.backfill_id.is_(None), ~busy)
        .order_by(job_runs.c.start_time, job_runs.c.id)
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await conn.execute(
            update(job_runs)
            .where(job_runs.c.id == oldest)
            .values(status=RUNNING, runner=runner.name, runner_key=runner.key, start_time=func.clock_timestamp())
            .returning(job_runs)
        )
    ).first()
    return run_record(row) if row else None


async def jobs_with_waiting_firings(conn: AsyncConnection) -> list[str]:
    """Jobs whose firings wait while none of their runs is in progress (after a crash)."""
    running = select(job_runs.c.job_name).where(job_runs.c.status == RUNNING)
    query = (
        select(job_runs.c.job_name)
        .where(job_runs.c.status == QUEUED, job_runs.c.backfill_id.is_(None), job_runs.c.job_name.not_in(running))
        .distinct()
    )
    return list((await conn.execute(query)).scalars())


# The end of every attempt, one statement built once: a backfill finishes thousands
# of slots, and building the expression per call cost more than running it.
_FINISH = text(
    """
    UPDATE scheduler.job_runs
       SET status = :status,
           finish_time = clock_timestamp(),
           duration_seconds = extract(epoch FROM clock_timestamp() - start_time),
           result = :result,
           error = :error,
           next_attempt_time = clock_timestamp() + make_interval(secs => :retry_after)
     WHERE id = :run_id AND runner = :runner AND status IN ('running', 'interrupted')
    """
).bindparams(bindparam("result", type_=JSONB), bindparam("retry_after", type_=Float))


async def finish_run(
    conn: AsyncConnection,
    run_id: uuid.UUID,
    runner: Runner,
    *,
    status: RunStatus,
    result: Mapping[str, Any] | None = None,
    error: str = "",
    retry_after_seconds: float | None = None,
) -> None:
    """Records an attempt's end (and when its retry is due, if one follows: NULL
    otherwise). A run marked interrupted while its runner was merely cut off from the
    database still gets its true outcome."""
    await conn.execute(_FINISH, {
        "status": status.value, "result": dict(result) if result is not None else None, "error": error,
        "retry_after": retry_after_seconds, "run_id": run_id, "runner": runner.name,
    })


async def claim_due_retry(conn: AsyncConnection) -> RunRecord | None:
    """One failed attempt whose retry is due, locked (other claimers skip it) until this
    transaction links it to its retry. A job's retry waits while the job runs; a
    backfill slot's retry waits in its backfill instead, and is dropped if the backfill
    was cancelled. A deleted job's retries are dropped."""
    failed = job_runs.alias("failed")
    busy = (
        select(job_runs.c.id)
        .where(job_runs.c.job_name == failed.c.job_name, job_runs.c.status == RUNNING)
        .exists()
    )
    cancelled = (
        select(backfills.c.id).where(backfills.c.id == failed.c.backfill_id, backfills.c.state == "cancelled").exists()
    )
    job_exists = select(jobs.c.name).where(jobs.c.name == failed.c.job_name).exists()
    row = (
        await conn.execute(
            select(failed)
            .where(
                failed.c.status == RunStatus.FAILED.value,
                failed.c.retry_run_id.is_(None),
                failed.c.next_attempt_time <= func.now(),
                job_exists,
                or_(and_(failed.c.backfill_id.is_(None), ~busy), and_(failed.c.backfill_id.is_not(None), ~cancelled)),
            )
            .order_by(failed.c.next_attempt_time)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()
    return run_record(row) if row else None


async def link_retry(conn: AsyncConnection, run_id: uuid.UUID, retry_run_id: uuid.UUID) -> None:
    await conn.execute(update(job_runs).where(job_runs.c.id == run_id).values(retry_run_id=retry_run_id))


async def mark_orphans_interrupted(conn: AsyncConnection) -> list[RunRecord]:
    """Runs left 'running' by replicas that no longer hold their liveness lock."""
    live_keys = select(text("objid::bigint")).select_from(text("pg_locks")).where(
        text(
            "locktype = 'advisory' AND granted AND objsubid = 2 AND classid = :namespace "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).bindparams(namespace=REPLICA_LOCK_NAMESPACE)
    )
    return _records(
        await conn.execute(
            update(job_runs)
            .where(job_runs.c.status == RUNNING, job_runs.c.runner_key.not_in(live_keys))
            .values(
                status=RunStatus.INTERRUPTED.value,
                finish_time=func.clock_timestamp(),
                duration_seconds=func.extract("epoch", func.clock_timestamp() - job_runs.c.start_time),
                error=func.concat("interrupted: scheduler replica ", job_runs.c.runner, " stopped during the run"),
            )
            .returning(job_runs)
        )
    )


async def get_run(conn: AsyncConnection, run_id: uuid.UUID) -> RunRecord | None:
    row = (await conn.execute(select(job_runs).where(job_runs.c.id == run_id))).first()
    return run_record(row) if row else None


async def last_runs(conn: AsyncConnection) -> dict[str, RunRecord]:
    rows = await conn.execute(
        select(job_runs)
        .ext(distinct_on(job_runs.c.job_name))
        .order_by(job_runs.c.job_name, job_runs.c.start_time.desc(), job_runs.c.id.desc())
    )
    return {row.job_name: run_record(row) for row in rows}


async def list_runs(
    conn: AsyncConnection,
    *,
    job_name: str,
    status: RunStatus | None,
    trigger: TriggerKind | None,
    backfill_id: uuid.UUID | None,
    start_after: datetime | None,
    start_before: datetime | None,
    cursor: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[RunRecord]:
    """Newest first, keyset-paginated on (start_time, id)."""
    conditions = []
    if job_name:
        conditions.append(job_runs.c.job_name == job_name)
    if status is not None:
        conditions.append(job_runs.c.status == status.value)
    if trigger is not None:
        conditions.append(job_runs.c.trigger == trigger.value)
    if backfill_id is not None:
        conditions.append(job_runs.c.backfill_id == backfill_id)
    if start_after is not None:
        conditions.append(job_runs.c.start_time >= start_after)
    if start_before is not None:
        conditions.append(job_runs.c.start_time < start_before)
    if cursor is not None:
        conditions.append(tuple_(job_runs.c.start_time, job_runs.c.id) < tuple_(*cursor))
    query = (
        select(job_runs)
        .where(and_(True, *conditions))
        .order_by(job_runs.c.start_time.desc(), job_runs.c.id.desc())
        .limit(limit)
    )
    return _records(await conn.execute(query))


async def summarize(conn: AsyncConnection, job_name: str, since: datetime) -> Summary:
    def count(*statuses: RunStatus):
        return func.count().filter(job_runs.c.status.in_([status.value for status in statuses]))

    finished = job_runs.c.status.in_(
        [s.value for s in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.DEAD_LETTERED, RunStatus.INTERRUPTED)]
    )
    window = and_(job_runs.c.job_name == job_name, job_runs.c.start_time >= since)
    not_run = [RunStatus.SKIPPED.value, RunStatus.QUEUED.value, RunStatus.CANCELLED.value]
    totals = (
        await conn.execute(
            select(
                func.count().filter(job_runs.c.status.not_in(not_run)).label("runs"),
                count(RunStatus.SUCCEEDED).label("succeeded"),
                count(RunStatus.FAILED, RunStatus.DEAD_LETTERED, RunStatus.INTERRUPTED).label("failed"),
                count(RunStatus.DEAD_LETTERED).label("dead_lettered"),
                count(RunStatus.INTERRUPTED).label("interrupted"),
                count(RunStatus.SKIPPED).label("skipped"),
                func.coalesce(func.avg(job_runs.c.duration_seconds).filter(finished), 0.0).label("average"),
                func.coalesce(
                    func.percentile_cont(0.95).within_group(job_runs.c.duration_seconds).filter(finished), 0.0
                ).label("p95"),
            ).where(window)
        )
    ).one()
    last_error = (
        await conn.execute(
            select(job_runs.c.error, job_runs.c.finish_time)
            .where(window, job_runs.c.error != "", job_runs.c.status.not_in(not_run))
            .order_by(job_runs.c.start_time.desc())
            .limit(1)
        )
    ).first()
    return Summary(
        runs=totals.runs,
        succeeded=totals.succeeded,
        failed=totals.failed,
        dead_lettered=totals.dead_lettered,
        interrupted=totals.interrupted,
        skipped=totals.skipped,
        average_duration=float(totals.average),
        p95_duration=float(totals.p95),
        last_error=last_error.error if last_error else "",
        last_error_time=last_error.finish_time if last_error else None,
    )


async def purge_runs(conn: AsyncConnection, older_than: datetime) -> dict[str, int]:
    """Deletes finished runs, ended backfills and idempotency keys older than the cut-off."""
    runs = await conn.execute(
        delete(job_runs).where(
            job_runs.c.start_time < older_than,
            job_runs.c.status.not_in([RUNNING, QUEUED]),
            # A pending retry still needs its failed attempt.
            or_(job_runs.c.status != RunStatus.FAILED.value, job_runs.c.retry_run_id.is_not(None)),
        )
    )
    ended = await conn.execute(delete(backfills).where(backfills.c.finish_time < older_than))
    keys = await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.create_time < older_than))
    return {"runs_deleted": runs.rowcount, "backfills_deleted": ended.rowcount,
            "idempotency_keys_deleted": keys.rowcount}


async def purge_audit_events(conn: AsyncConnection, retention_days: int) -> dict[str, int]:
    """Deletes the scheduler's audit records older than their own retention."""
    return {"audit_events_deleted": await audit.purge(conn, audit_events, retention_days)}


async def last_successes(conn: AsyncConnection) -> dict[str, datetime]:
    """When each job's latest successful run finished (jobs that never succeeded are absent)."""
    rows = await conn.execute(
        select(job_runs.c.job_name, func.max(job_runs.c.finish_time))
        .where(job_runs.c.status == RunStatus.SUCCEEDED.value)
        .group_by(job_runs.c.job_name)
    )
    return {name: finished for name, finished in rows}
