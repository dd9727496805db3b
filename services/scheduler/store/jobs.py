"""scheduler.jobs: what each job calls, when, and its policies; plus reads of
APScheduler's own job store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, case, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.catalogue import JobDefinition
from services.scheduler.domain.jobs import JobSpec
from services.scheduler.domain.policies import OverlapPolicy
from services.scheduler.domain.schedules import Schedule
from services.scheduler.store.records import JobRecord
from services.scheduler.store.tables import apscheduler_jobs, jobs

_SCHEDULE_COLUMNS = ("cron", "interval_seconds", "run_at", "time_zone", "jitter_seconds")


def _record(row: Row) -> JobRecord:
    return JobRecord(
        name=row.name,
        builtin=row.builtin,
        description=row.description,
        target=row.target,
        payload=dict(row.payload),
        schedule=Schedule(row.cron, row.interval_seconds, row.time_zone, row.jitter_seconds, row.run_at),
        paused=row.paused,
        paused_time=row.paused_time,
        max_attempts=row.max_attempts,
        deadline_seconds=row.deadline_seconds,
        overlap_policy=OverlapPolicy(row.overlap_policy),
        catch_up_window_seconds=row.catch_up_window_seconds,
        catch_up_coalesce=row.catch_up_coalesce,
        blackout_calendars=tuple(row.blackout_calendars),
        version=row.version,
        applied_version=row.applied_version,
        update_time=row.update_time,
    )


def schedule_values(schedule: Schedule) -> dict[str, Any]:
    return {
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "run_at": schedule.run_at,
        "time_zone": schedule.time_zone,
        "jitter_seconds": schedule.jitter_seconds,
    }


def spec_values(spec: JobSpec, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Column values of the spec's fields (all when None)."""
    values: dict[str, Any] = {
        "description": {"description": spec.description},
        "target": {"target": spec.target},
        "payload": {"payload": spec.payload},
        "schedule": {**schedule_values(spec.schedule), "schedule_source": "api"},
        "paused": {"paused": spec.paused},
        "max_attempts": {"max_attempts": spec.max_attempts or None},
        "deadline_seconds": {"deadline_seconds": spec.deadline_seconds or None},
        "overlap_policy": {"overlap_policy": spec.overlap_policy.value},
        "catch_up": {
            "catch_up_window_seconds": spec.catch_up.window_seconds or None,
            "catch_up_coalesce": spec.catch_up.coalesce,
        },
        "blackout_calendars": {"blackout_calendars": list(spec.blackout_calendars)},
    }
    chosen: dict[str, Any] = {}
    for name in fields if fields is not None else values:
        chosen.update(values[name])
    return chosen


async def seed_builtin(
    conn: AsyncConnection, definitions: Mapping[str, JobDefinition], configured: Mapping[str, Schedule]
) -> None:
    """Creates missing built-in jobs with their configured schedule, and moves those
    still on configuration to a changed one; schedules edited over the API are left alone."""
    for name, schedule in configured.items():
        definition = definitions[name]
        values = schedule_values(schedule)
        await conn.execute(
            insert(jobs)
            .values(name=name, builtin=True, description=definition.description, target=definition.target,
                    catch_up_coalesce=True, **values)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"description": definition.description, "target": definition.target},
            )
        )
        await conn.execute(
            update(jobs)
            .where(
                jobs.c.name == name,
                jobs.c.schedule_source == "config",
                tuple_(*(jobs.c[key] for key in _SCHEDULE_COLUMNS)).is_distinct_from(
                    tuple_(*(values[key] for key in _SCHEDULE_COLUMNS))
                ),
            )
            .values(**values, version=jobs.c.version + 1, update_time=func.now())
        )


async def job_records(conn: AsyncConnection, names: Iterable[str] | None = None) -> list[JobRecord]:
    query = select(jobs).order_by(jobs.c.name)
    if names is not None:
        query = query.where(jobs.c.name.in_(list(names)))
    return [_record(row) for row in await conn.execute(query)]


async def get_job(conn: AsyncConnection, name: str) -> JobRecord | None:
    row = (await conn.execute(select(jobs).where(jobs.c.name == name))).first()
    return _record(row) if row else None


async def lock_job(conn: AsyncConnection, name: str) -> JobRecord | None:
    """The job, its row locked for this transaction: serialises starting its runs."""
    row = (await conn.execute(select(jobs).where(jobs.c.name == name).with_for_update())).first()
    return _record(row) if row else None


async def insert_job(conn: AsyncConnection, spec: JobSpec) -> JobRecord | None:
    """None when a job of that name exists."""
    row = (
        await conn.execute(
            insert(jobs)
            .values(name=spec.name, builtin=False, paused_time=func.now() if spec.paused else None,
                    **spec_values(spec))
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(jobs)
        )
    ).first()
    return _record(row) if row else None


async def change_job(conn: AsyncConnection, name: str, **values: Any) -> JobRecord | None:
    """Applies column values and raises the version (the leader re-applies the job)."""
    if values.get("paused"):
        # Catch-up after the resume counts from the first pause, not a repeated one.
        values["paused_time"] = case((jobs.c.paused, jobs.c.paused_time), else_=func.now())
    row = (
        await conn.execute(
            update(jobs)
            .where(jobs.c.name == name)
            .values(**values, version=jobs.c.version + 1, update_time=func.now())
            .returning(jobs)
        )
    ).first()
    return _record(row) if row else None


async def delete_job(conn: AsyncConnection, name: str) -> None:
    await conn.execute(delete(jobs).where(jobs.c.name == name, jobs.c.builtin.is_(False)))


async def job_names(conn: AsyncConnection) -> set[str]:
    return set((await conn.execute(select(jobs.c.name))).scalars())


async def jobs_naming_calendar(conn: AsyncConnection, calendar: str) -> list[str]:
    query = select(jobs.c.name).where(jobs.c.blackout_calendars.any_() == calendar).order_by(jobs.c.name)
    return list((await conn.execute(query)).scalars())


async def unapplied_jobs(conn: AsyncConnection) -> list[JobRecord]:
    return [_record(row) for row in await conn.execute(select(jobs).where(jobs.c.version != jobs.c.applied_version))]


async def mark_applied(conn: AsyncConnection, job: JobRecord) -> None:
    """The leader's job store reflects this version; a resumed job's pause is caught up."""
    await conn.execute(
        update(jobs)
        .where(jobs.c.name == job.name)
        .values(applied_version=job.version, paused_time=jobs.c.paused_time if job.paused else None)
    )


async def next_run_times(conn: AsyncConnection) -> dict[str, datetime | None]:
    """Next firing per job as APScheduler's job store holds it (None: paused)."""
    rows = await conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time))
    return {
        row.id: datetime.fromtimestamp(row.next_run_time, UTC) if row.next_run_time is not None else None
        for row in rows
    }
