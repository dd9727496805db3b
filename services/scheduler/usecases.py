"""The calls that coordinate several steps, each in the caller's transaction:
servicer -> use case -> domain decisions + store.

The servicer owns the transaction (with its idempotency key) and the messages;
a use case loads, asks the domain, and writes.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.domain.backfills import backfill_slots
from services.scheduler.domain.blackouts import NAME as CALENDAR_NAME
from services.scheduler.domain.blackouts import Calendar
from services.scheduler.domain.catalogue import IN_PROCESS_PREFIX
from services.scheduler.domain.errors import Duplicate, InvalidInput, Missing, Problems, Violation, WrongState
from services.scheduler.domain.jobs import JobSpec, check_update_paths, validate_job
from services.scheduler.domain.policies import OverlapPolicy
from services.scheduler.domain.runs import TriggerKind
from services.scheduler.domain.schedules import build_trigger
from services.scheduler.firing import open_firing
from services.scheduler.runner import Runner
from services.scheduler.store import backfills as backfill_store
from services.scheduler.store import calendars as calendar_store
from services.scheduler.store import jobs as job_store
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import BackfillRecord, JobRecord, RunRecord
from services.scheduler.targets import check_payload, check_target

# --- reading jobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    job: JobRecord
    next_run_time: datetime | None
    last_run: RunRecord | None


async def job_views(conn: AsyncConnection, default_zone: str, names: list[str] | None = None) -> list[JobView]:
    jobs = await job_store.job_records(conn, names)
    next_runs = await job_store.next_run_times(conn)
    last = await run_store.last_runs(conn)
    return [JobView(job, _next_run_time(job, next_runs, default_zone), last.get(job.name)) for job in jobs]


async def job_view(conn: AsyncConnection, default_zone: str, name: str) -> JobView:
    views = await job_views(conn, default_zone, [name])
    if not views:
        raise Missing("job", name)
    return views[0]


def _next_run_time(job: JobRecord, next_runs: dict[str, datetime | None], default_zone: str) -> datetime | None:
    if job.paused:
        return None
    if job.version == job.applied_version and next_runs.get(job.name) is not None:
        return next_runs[job.name]
    # The leader has not applied the latest change yet: what the schedule gives from now.
    next_time = build_trigger(job.schedule, default_zone).get_next_fire_time(None, datetime.now(UTC))
    return next_time if job.schedule.run_at is None or next_time > datetime.now(UTC) else None


# --- defining jobs ---------------------------------------------------------------------


async def _check_definition(conn: AsyncConnection, spec: JobSpec, *, builtin: bool, prefix: str = "job") -> None:
    problems = Problems()
    problems.extend(validate_job(spec, prefix))
    if not builtin and spec.target:
        target_problems = check_target(spec.target, f"{prefix}.target")
        problems.extend(target_problems)
        if not target_problems:
            problems.extend(check_payload(spec.target, spec.payload, f"{prefix}.payload"))
    # Names that cannot be a calendar's are already refused; look up the others.
    named = [name for name in spec.blackout_calendars if CALENDAR_NAME.fullmatch(name)]
    if named:
        known = {c.name for c in await calendar_store.calendars(conn, named)}
        for i, name in enumerate(spec.blackout_calendars):
            if name in named and name not in known:
                problems.add(f"{prefix}.blackout_calendars[{i}]", f"no blackout calendar named {name!r}")
    problems.raise_if_any()


async def create_job(conn: AsyncConnection, spec: JobSpec) -> JobRecord:
    await _check_definition(conn, spec, builtin=False)
    job = await job_store.insert_job(conn, spec)
    if job is None:
        raise Duplicate(f"job {spec.name!r} already exists")
    return job


async def update_job(conn: AsyncConnection, name: str, changes: JobSpec, paths: list[str]) -> JobRecord:
    current = await job_store.lock_job(conn, name)
    if current is None:
        raise Missing("job", name)
    chosen = check_update_paths(paths, current.builtin, name)
    merged = dataclasses.replace(
        current.spec(), **{field: getattr(changes, field) for field in chosen}
    )
    await _check_definition(conn, merged, builtin=current.builtin)
    updated = await job_store.change_job(conn, name, **job_store.spec_values(merged, chosen))
    assert updated is not None
    return updated


async def delete_job(conn: AsyncConnection, name: str) -> None:
    job = await job_store.lock_job(conn, name)
    if job is None:
        raise Missing("job", name)
    if job.builtin:
        raise WrongState(f"{name} is a built-in job: pause it instead", subject=f"jobs/{name}")
    _, waiting = await run_store.in_progress(conn, name)
    await run_store.cancel_runs(conn, waiting, "the job was deleted")
    await job_store.delete_job(conn, name)


async def change_job(conn: AsyncConnection, name: str, **values: Any) -> JobRecord:
    job = await job_store.change_job(conn, name, **values)
    if job is None:
        raise Missing("job", name)
    return job


# --- running ---------------------------------------------------------------------------


def check_run_params(job: JobRecord, params: dict[str, Any]) -> None:
    """Refuses parameters the target cannot take, before any run is recorded."""
    if job.target.startswith(IN_PROCESS_PREFIX):
        problems = Problems()
        for key in set(params) - {"retention_days"}:
            problems.add(f"params.{key}", "unknown; allowed: retention_days")
        days = params.get("retention_days", 1)
        if not isinstance(days, int | float) or days != int(days) or days < 1:
            problems.add("params.retention_days", "a whole number of days, at least 1")
        problems.raise_if_any()
        return
    problems_found = check_payload(job.target, params, "params")
    if problems_found:
        raise InvalidInput(problems_found)


async def run_now(conn: AsyncConnection, runner: Runner, name: str, params: dict[str, Any]) -> tuple[RunRecord, JobRecord]:
    job = await job_store.get_job(conn, name)
    if job is None:
        raise Missing("job", name)
    check_run_params(job, params)
    run, job = await open_firing(conn, runner, name, TriggerKind.MANUAL, params=params)
    assert run is not None
    return run, job


# --- backfills -------------------------------------------------------------------------


async def create_backfill(
    conn: AsyncConnection,
    runner: Runner,
    default_zone: str,
    *,
    job_name: str,
    start: datetime | None,
    end: datetime | None,
    max_concurrency: int,
    overlap_policy: OverlapPolicy | None,
) -> BackfillRecord:
    job = await job_store.get_job(conn, job_name)
    if job is None:
        raise Missing("job", job_name)
    trigger = build_trigger(job.schedule, default_zone)
    slots = backfill_slots(trigger, start, end, datetime.now(UTC), max_concurrency)
    assert start is not None and end is not None
    backfill_id = await backfill_store.insert_backfill(
        conn, job_name=job_name, start=start, end=end, max_concurrency=max_concurrency or 1,
        overlap_policy=overlap_policy, slots=slots, runner=runner.identity,
    )
    return await get_backfill(conn, backfill_id)


async def get_backfill(conn: AsyncConnection, backfill_id: uuid.UUID) -> BackfillRecord:
    backfill = await backfill_store.get_backfill(conn, backfill_id)
    if backfill is None:
        raise Missing("backfill", str(backfill_id))
    return backfill


async def cancel_backfill(conn: AsyncConnection, backfill_id: uuid.UUID) -> BackfillRecord:
    backfill = await get_backfill(conn, backfill_id)
    if not await backfill_store.cancel_backfill(conn, backfill_id, "the backfill was cancelled"):
        raise WrongState(f"backfill {backfill_id} already ended ({backfill.state.value})",
                         subject=f"backfills/{backfill_id}")
    return await get_backfill(conn, backfill_id)


def parse_backfill_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInput([Violation("backfill_id", "not a backfill id (a UUID)")]) from None




# --- blackout calendars ----------------------------------------------------------------


async def create_calendar(conn: AsyncConnection, calendar: Calendar) -> Calendar:
    if not await calendar_store.insert_calendar(conn, calendar):
        raise Duplicate(f"blackout calendar {calendar.name!r} already exists")
    return calendar


async def replace_calendar(conn: AsyncConnection, calendar: Calendar) -> Calendar:
    if not await calendar_store.replace_calendar(conn, calendar):
        raise Missing("blackout calendar", calendar.name)
    return calendar


async def get_calendar(conn: AsyncConnection, name: str) -> Calendar:
    found = await calendar_store.calendars(conn, [name])
    if not found:
        raise Missing("blackout calendar", name)
    return found[0]


async def delete_calendar(conn: AsyncConnection, name: str) -> None:
    users = await job_store.jobs_naming_calendar(conn, name)
    if users:
        raise WrongState(f"blackout calendar {name} is named by {', '.join(users)}: remove it from them first",
                         subject=f"blackoutCalendars/{name}")
    if not await calendar_store.delete_calendar(conn, name):
        raise Missing("blackout calendar", name)
