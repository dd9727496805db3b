"""A firing of a job — from the schedule, or asked for (RunJobNow) — meeting the
job's policies: a paused job's schedule does not fire, a blackout calendar skips
it, and the overlap policy starts, queues, skips or cancels. Missed firings go
through the catch-up window first. Every decision is a row in the run log.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import db
from services.scheduler.domain.blackouts import blacked_out_by
from services.scheduler.domain.errors import Missing
from services.scheduler.domain.policies import Action, CatchUpPolicy, decide_overlap, plan_catch_up
from services.scheduler.domain.runs import RunStatus, TriggerKind
from services.scheduler.runner import Runner
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import calendars as calendar_store
from services.scheduler.store import jobs as job_store
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import JobRecord, RunRecord

_STATUS = {Action.START: RunStatus.RUNNING, Action.QUEUE: RunStatus.QUEUED, Action.SKIP: RunStatus.SKIPPED}


async def open_firing(
    conn: AsyncConnection,
    runner: Runner,
    job_name: str,
    trigger: TriggerKind,
    *,
    scheduled_time: datetime | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[RunRecord | None, JobRecord]:
    """Records a firing, in the caller's transaction, as its policies decide.

    The job's row is locked so that two firings of one job decide in turn. A schedule
    firing of a paused job records nothing (None), nor does one another replica
    already recorded.
    """
    job = await job_store.lock_job(conn, job_name)
    if job is None:
        raise Missing("job", job_name)
    if trigger == TriggerKind.SCHEDULE and job.paused:
        return None, job
    record = {"job_name": job_name, "trigger": trigger, "runner": runner.identity,
              "scheduled_time": scheduled_time, "params": params}
    if trigger == TriggerKind.SCHEDULE and job.blackout_calendars and scheduled_time is not None:
        calendar = blacked_out_by(await calendar_store.calendars(conn, job.blackout_calendars), scheduled_time)
        if calendar is not None:
            reason = f"blackout calendar {calendar}"
            run = await run_store.insert_run(conn, **record, status=RunStatus.SKIPPED, error=f"skipped: {reason}",
                                             decision=reason)
            return run, job
    running, waiting = await run_store.in_progress(conn, job_name)
    decision = decide_overlap(job.overlap_policy, running, waiting)
    if decision.cancel:
        await run_store.cancel_runs(conn, decision.cancel, "overlap policy CANCEL_OTHER: cancelled by a later firing")
    status = _STATUS[decision.action]
    run = await run_store.insert_run(
        conn, **record, status=status, decision=decision.reason,
        error=f"skipped: {decision.reason}" if status == RunStatus.SKIPPED else "",
    )
    return run, job


class Firings:
    """The schedule's firings on the leader."""

    def __init__(self, engine: AsyncEngine, runner: Runner, settings: SchedulerSettings) -> None:
        self._engine, self._runner, self._settings = engine, runner, settings
        # A job's firings are handled in order: a live firing waits while caught-up ones
        # still run one after another, rather than meeting them under the overlap policy.
        self._in_order: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def fire(self, job_name: str, times: Sequence[datetime]) -> None:
        """Firings due now, oldest first: more than one means some were missed. The
        plan and the first firing share one transaction (the usual case: one firing)."""
        async with self._in_order[job_name]:
            await self._fire(job_name, times)

    async def _fire(self, job_name: str, times: Sequence[datetime]) -> None:

        def open_at(at: datetime):
            return lambda conn: open_firing(conn, self._runner, job_name, TriggerKind.SCHEDULE, scheduled_time=at)

        async def plan_and_open_first(conn: AsyncConnection):
            job = await job_store.lock_job(conn, job_name)
            if job is None:
                return None, []
            window = job.catch_up_window_seconds or self._settings.scheduler_catch_up_window_seconds
            plan = plan_catch_up(times, datetime.now(UTC), CatchUpPolicy(window, job.catch_up_coalesce))
            await run_store.insert_skipped_firings(
                conn, job_name, self._runner.identity, [(f.time, f.reason) for f in plan if not f.run]
            )
            due = [firing.time for firing in plan if firing.run]
            if not due:
                return None, []
            return await open_at(due[0])(conn), due[1:]

        opened, later = await db.run_in_transaction(self._engine, plan_and_open_first)
        if opened is not None:
            self._runner.launch(*opened)
        for scheduled_time in later:
            previous = opened[0] if opened is not None else None
            # Caught-up firings run one after another, not all at once against the overlap policy.
            if previous is not None and previous.status in (RunStatus.RUNNING, RunStatus.QUEUED):
                await self._runner.wait(previous.id)
            opened = await db.run_in_transaction(self._engine, open_at(scheduled_time))
            self._runner.launch(*opened)
