"""The scheduler's tables: job definitions, the job-run log, and reads of APScheduler's store."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    Table,
    Text,
    Unicode,
    and_,
    delete,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.idempotency import idempotency_table
from services.scheduler.domain import RunStatus, Schedule, TriggerKind

metadata = MetaData(schema="scheduler")

jobs = Table(
    "jobs",
    metadata,
    Column("name", Text, primary_key=True),
    Column("cron", Text, nullable=False),
    Column("interval_seconds", Integer, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("jitter_seconds", Integer, nullable=False),
    Column("schedule_source", Text, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("applied_version", Integer, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("job_name", Text, nullable=False),
    Column("firing_id", UUID(as_uuid=True), nullable=False),
    Column("trigger", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("scheduled_time", DateTime(timezone=True)),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("finish_time", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("result", JSONB),
    Column("error", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("runner", Text, nullable=False),
    Column("runner_key", Integer, nullable=False),
    Column("target_request_id", Text, nullable=False),
    Column("next_attempt_time", DateTime(timezone=True)),
    Column("retry_run_id", UUID(as_uuid=True)),
)

apscheduler_jobs = Table(
    "apscheduler_jobs",
    metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25)),
    Column("job_state", LargeBinary, nullable=False),
)

idempotency_keys = idempotency_table(metadata)

# Advisory lock namespaces (the first key of the two-key form): one lock per live
# replica, and the single leader lock.
REPLICA_LOCK_NAMESPACE = 0x53434852  # "SCHR"
LEADER_LOCK_NAMESPACE = 0x5343484C  # "SCHL"


def schedule_of(row: Row) -> Schedule:
    return Schedule(row.cron, row.interval_seconds, row.time_zone, row.jitter_seconds)


def _schedule_values(schedule: Schedule) -> dict[str, Any]:
    return {
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "time_zone": schedule.time_zone,
        "jitter_seconds": schedule.jitter_seconds,
    }


# --- job definitions -----------------------------------------------------------------


async def seed_jobs(conn: AsyncConnection, configured: Mapping[str, Schedule]) -> None:
    """Creates missing jobs with their configured schedule, and moves jobs still on
    configuration to a changed one; schedules edited over the API are left alone."""
    for name, schedule in configured.items():
        values = _schedule_values(schedule)
        await conn.execute(insert(jobs).values(name=name, **values).on_conflict_do_nothing())
        await conn.execute(
            update(jobs)
            .where(
                jobs.c.name == name,
                jobs.c.schedule_source == "config",
                tuple_(jobs.c.cron, jobs.c.interval_seconds, jobs.c.time_zone, jobs.c.jitter_seconds)
                != tuple_(*(values[key] for key in ("cron", "interval_seconds", "time_zone", "jitter_seconds"))),
            )
            .values(**values, version=jobs.c.version + 1, update_time=func.now())
        )


async def job_rows(conn: AsyncConnection, names: Iterable[str] | None = None) -> list[Row]:
    query = select(jobs).order_by(jobs.c.name)
    if names is not None:
        query = query.where(jobs.c.name.in_(list(names)))
    return list(await conn.execute(query))


async def lock_job(conn: AsyncConnection, name: str) -> Row | None:
    """The job's row, locked for this transaction: serialises starting its runs."""
    return (await conn.execute(select(jobs).where(jobs.c.name == name).with_for_update())).first()


async def change_job(conn: AsyncConnection, name: str, **values: Any) -> Row | None:
    return (
        await conn.execute(
            update(jobs)
            .where(jobs.c.name == name)
            .values(**values, version=jobs.c.version + 1, update_time=func.now())
            .returning(jobs)
        )
    ).first()


async def set_schedule(conn: AsyncConnection, name: str, schedule: Schedule) -> Row | None:
    return await change_job(conn, name, **_schedule_values(schedule), schedule_source="api")


async def unapplied_jobs(conn: AsyncConnection) -> list[Row]:
    return list(await conn.execute(select(jobs).where(jobs.c.version != jobs.c.applied_version)))


async def mark_applied(conn: AsyncConnection, name: str, version: int) -> None:
    await conn.execute(update(jobs).where(jobs.c.name == name).values(applied_version=version))


async def next_run_times(conn: AsyncConnection) -> dict[str, datetime | None]:
    """Next firing per job as APScheduler's job store holds it (None: paused)."""
    rows = await conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time))
    return {
        row.id: datetime.fromtimestamp(row.next_run_time, UTC) if row.next_run_time is not None else None
        for row in rows
    }


# --- the job-run log -------------------------------------------------------------------


@dataclass(frozen=True)
class Runner:
    """Who executes a run: a replica's name and the key of its liveness lock."""

    name: str
    key: int


async def insert_run(
    conn: AsyncConnection,
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
) -> Row | None:
    """Adds a run; None when this schedule firing was already recorded (another replica)."""
    run_id = uuid.uuid4()
    finished = status != RunStatus.RUNNING
    statement = (
        insert(job_runs)
        .values(
            id=run_id,
            job_name=job_name,
            firing_id=firing_id or run_id,
            trigger=trigger.value,
            attempt=attempt,
            status=status.value,
            scheduled_time=scheduled_time,
            start_time=func.clock_timestamp(),
            finish_time=func.clock_timestamp() if finished else None,
            duration_seconds=0.0 if finished else None,
            error=error,
            params=dict(params or {}),
            runner=runner.name,
            runner_key=runner.key,
            target_request_id=target_request_id or str(uuid.uuid4()),
        )
        .returning(job_runs)
    )
    if trigger == TriggerKind.SCHEDULE:
        statement = statement.on_conflict_do_nothing(
            index_elements=["job_name", "scheduled_time"], index_where=text("trigger = 'schedule'")
        )
    return (await conn.execute(statement)).first()


async def running_run(conn: AsyncConnection, job_name: str) -> Row | None:
    return (
        await conn.execute(
            select(job_runs).where(job_runs.c.job_name == job_name, job_runs.c.status == RunStatus.RUNNING.value)
        )
    ).first()


async def finish_run(
    conn: AsyncConnection,
    run_id: uuid.UUID,
    runner: Runner,
    *,
    status: RunStatus,
    result: Mapping[str, Any] | None = None,
    error: str = "",
    retry_after_seconds: float | None = None,
) -> Row | None:
    """Records an attempt's end (and when its retry is due, if one follows). A run marked interrupted while its runner was merely
    cut off from the database still gets its true outcome."""
    return (
        await conn.execute(
            update(job_runs)
            .where(
                job_runs.c.id == run_id,
                job_runs.c.runner == runner.name,
                job_runs.c.status.in_([RunStatus.RUNNING.value, RunStatus.INTERRUPTED.value]),
            )
            .values(
                status=status.value,
                finish_time=func.clock_timestamp(),
                duration_seconds=func.extract("epoch", func.clock_timestamp() - job_runs.c.start_time),
                result=dict(result) if result is not None else None,
                error=error,
                next_attempt_time=(
                    func.clock_timestamp() + timedelta(seconds=retry_after_seconds)
                    if retry_after_seconds is not None
                    else None
                ),
            )
            .returning(job_runs)
        )
    ).first()


async def claim_due_retry(conn: AsyncConnection) -> Row | None:
    """One failed attempt whose retry is due and whose job is not running, locked
    (other claimers skip it) until this transaction links it to its retry."""
    failed = job_runs.alias("failed")
    busy = (
        select(job_runs.c.id)
        .where(job_runs.c.job_name == failed.c.job_name, job_runs.c.status == RunStatus.RUNNING.value)
        .exists()
    )
    return (
        await conn.execute(
            select(failed)
            .where(
                failed.c.status == RunStatus.FAILED.value,
                failed.c.retry_run_id.is_(None),
                failed.c.next_attempt_time <= func.now(),
                ~busy,
            )
            .order_by(failed.c.next_attempt_time)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()


async def link_retry(conn: AsyncConnection, failed_run_id: uuid.UUID, retry_run_id: uuid.UUID) -> None:
    await conn.execute(update(job_runs).where(job_runs.c.id == failed_run_id).values(retry_run_id=retry_run_id))


async def mark_orphans_interrupted(conn: AsyncConnection) -> list[Row]:
    """Runs left 'running' by replicas that no longer hold their liveness lock."""
    live_keys = select(text("objid::bigint")).select_from(text("pg_locks")).where(
        text(
            "locktype = 'advisory' AND granted AND objsubid = 2 AND classid = :namespace "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).bindparams(namespace=REPLICA_LOCK_NAMESPACE)
    )
    return list(
        await conn.execute(
            update(job_runs)
            .where(job_runs.c.status == RunStatus.RUNNING.value, job_runs.c.runner_key.not_in(live_keys))
            .values(
                status=RunStatus.INTERRUPTED.value,
                finish_time=func.clock_timestamp(),
                duration_seconds=func.extract("epoch", func.clock_timestamp() - job_runs.c.start_time),
                error=func.concat("interrupted: scheduler replica ", job_runs.c.runner, " stopped during the run"),
            )
            .returning(job_runs)
        )
    )


async def get_run(conn: AsyncConnection, run_id: uuid.UUID) -> Row | None:
    return (await conn.execute(select(job_runs).where(job_runs.c.id == run_id))).first()


async def last_runs(conn: AsyncConnection) -> dict[str, Row]:
    rows = await conn.execute(
        select(job_runs)
        .ext(distinct_on(job_runs.c.job_name))
        .order_by(job_runs.c.job_name, job_runs.c.start_time.desc(), job_runs.c.id.desc())
    )
    return {row.job_name: row for row in rows}


async def list_runs(
    conn: AsyncConnection,
    *,
    job_name: str,
    status: RunStatus | None,
    start_after: datetime | None,
    start_before: datetime | None,
    cursor: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Row]:
    """Newest first, keyset-paginated on (start_time, id)."""
    conditions = []
    if job_name:
        conditions.append(job_runs.c.job_name == job_name)
    if status is not None:
        conditions.append(job_runs.c.status == status.value)
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
    return list(await conn.execute(query))


@dataclass(frozen=True)
class Summary:
    runs: int
    succeeded: int
    failed: int
    dead_lettered: int
    interrupted: int
    skipped: int
    average_duration: float
    p95_duration: float
    last_error: str
    last_error_time: datetime | None


async def summarize(conn: AsyncConnection, job_name: str, since: datetime) -> Summary:
    def count(*statuses: RunStatus):
        return func.count().filter(job_runs.c.status.in_([status.value for status in statuses]))

    finished = job_runs.c.status.in_(
        [s.value for s in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.DEAD_LETTERED, RunStatus.INTERRUPTED)]
    )
    window = and_(job_runs.c.job_name == job_name, job_runs.c.start_time >= since)
    totals = (
        await conn.execute(
            select(
                func.count().filter(job_runs.c.status != RunStatus.SKIPPED.value).label("runs"),
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
            .where(window, job_runs.c.error != "", job_runs.c.status != RunStatus.SKIPPED.value)
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
    """Deletes finished runs and idempotency keys older than the cut-off."""
    runs = await conn.execute(
        delete(job_runs).where(
            job_runs.c.start_time < older_than,
            job_runs.c.status != RunStatus.RUNNING.value,
            # A pending retry still needs its failed attempt.
            or_(job_runs.c.status != RunStatus.FAILED.value, job_runs.c.retry_run_id.is_not(None)),
        )
    )
    keys = await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.create_time < older_than))
    return {"runs_deleted": runs.rowcount, "idempotency_keys_deleted": keys.rowcount}
