"""Executing job runs: one row per attempt in the job-run log, the target call, and
the retries that follow a transient failure until the run is dead-lettered.

Any replica executes the manual runs it is asked for; the leader executes the
schedule's firings and every due retry (see leader.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import db
from libs.clients import ServiceClients
from libs.errors import NotFound
from services.scheduler import store
from services.scheduler.domain import (
    JOBS,
    FINISHED_STATUSES,
    RunStatus,
    TriggerKind,
    next_status_after_failure,
    retry_delay_seconds,
)
from services.scheduler.settings import SchedulerSettings
from services.scheduler.targets import TargetFailure, call_target

log = structlog.get_logger("loom.scheduler.runner")

RUNS = Counter("loom_scheduler_job_runs_total", "Job-run attempts by job and final status.", ["job", "status"])
RUN_SECONDS = Histogram(
    "loom_scheduler_job_run_seconds",
    "Duration of job-run attempts.",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
)
WAIT_POLL_SECONDS = 0.1


class Runner:
    def __init__(
        self, engine: AsyncEngine, clients: ServiceClients, settings: SchedulerSettings, identity: store.Runner
    ) -> None:
        self._engine, self._clients, self._settings = engine, clients, settings
        self.identity = identity
        self._tasks: dict[uuid.UUID, asyncio.Task] = {}

    # --- starting runs -----------------------------------------------------------------

    async def open_firing(
        self,
        conn: AsyncConnection,
        job_name: str,
        trigger: TriggerKind,
        *,
        scheduled_time: datetime | None = None,
        params: dict[str, Any] | None = None,
    ) -> Row | None:
        """Records a firing's first attempt, in the caller's transaction.

        The job's row is locked so that two starts of one job serialise: the second
        finds the first running and is recorded as skipped. A schedule firing of a
        paused job records nothing (None), nor does one another replica already took.
        """
        job = await store.lock_job(conn, job_name)
        if job is None:
            raise NotFound("job", job_name)
        if trigger == TriggerKind.SCHEDULE and job.paused:
            return None
        busy = await store.running_run(conn, job_name)
        return await store.insert_run(
            conn,
            job_name=job_name,
            trigger=trigger,
            status=RunStatus.SKIPPED if busy else RunStatus.RUNNING,
            error=f"skipped: run {busy.id} of {job_name} was still in progress" if busy else "",
            runner=self.identity,
            scheduled_time=scheduled_time,
            params=params,
        )

    def launch(self, run: Row) -> None:
        """Executes a recorded running attempt in the background."""
        if run.status != RunStatus.RUNNING.value:
            return
        task = asyncio.get_running_loop().create_task(self._attempt(run), name=f"job-run-{run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run.id, None))

    async def fire_scheduled(self, job_name: str, scheduled_time: datetime) -> None:
        """One firing of the schedule, run to the end of its first attempt."""
        run = await db.run_in_transaction(
            self._engine,
            lambda conn: self.open_firing(conn, job_name, TriggerKind.SCHEDULE, scheduled_time=scheduled_time),
        )
        if run is None:
            return
        self.launch(run)
        if run.id in self._tasks:
            await asyncio.shield(self._tasks[run.id])

    async def record_skipped_firing(self, job_name: str, scheduled_time: datetime, why: str) -> None:
        await db.run_in_transaction(
            self._engine,
            lambda conn: store.insert_run(
                conn,
                job_name=job_name,
                trigger=TriggerKind.SCHEDULE,
                status=RunStatus.SKIPPED,
                error=f"skipped: {why}",
                runner=self.identity,
                scheduled_time=scheduled_time,
            ),
        )

    async def start_due_retries(self) -> int:
        """Starts every retry that is due (the leader calls this on each tick)."""
        started = 0
        while (run := await db.run_in_transaction(self._engine, self._open_retry)) is not None:
            self.launch(run)
            started += 1
        return started

    async def _open_retry(self, conn: AsyncConnection) -> Row | None:
        failed = await store.claim_due_retry(conn)
        if failed is None:
            return None
        retry = await store.insert_run(
            conn,
            job_name=failed.job_name,
            trigger=TriggerKind.RETRY,
            status=RunStatus.RUNNING,
            runner=self.identity,
            attempt=failed.attempt + 1,
            firing_id=failed.firing_id,
            target_request_id=failed.target_request_id,
            params=failed.params,
        )
        await store.link_retry(conn, failed.id, retry.id)
        return retry

    async def wait(self, run_id: uuid.UUID) -> Row:
        """The run once its attempt has finished (polls when another replica runs it)."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.shield(task)
        while True:
            async with self._engine.connect() as conn:
                run = await store.get_run(conn, run_id)
            if run.status in FINISHED_STATUSES:
                return run
            await asyncio.sleep(WAIT_POLL_SECONDS)

    # --- executing an attempt ----------------------------------------------------------

    async def _attempt(self, run: Row) -> None:
        structlog.contextvars.bind_contextvars(request_id=run.target_request_id, job=run.job_name, run_id=str(run.id))
        job = JOBS[run.job_name]
        started = time.monotonic()
        try:
            if job.service is None:
                result = await self._purge_job_runs(run.params)
            else:
                result = await call_target(
                    self._clients,
                    self._settings.target_of(job.service),
                    job,
                    run.target_request_id,
                    run.params,
                    self._settings.scheduler_job_timeout_seconds,
                )
        except asyncio.CancelledError:
            await self._finish(run, RunStatus.INTERRUPTED, error="interrupted: the scheduler stopped during the run")
            raise
        except TargetFailure as failure:
            await self._fail(run, str(failure), failure.transient)
        except Exception as error:  # the scheduler's own housekeeping (database) failed
            log.exception("job run failed")
            await self._fail(run, f"{type(error).__name__}: {error}", db.is_transient(error))
        else:
            await self._finish(run, RunStatus.SUCCEEDED, result=result)
        finally:
            RUN_SECONDS.labels(run.job_name).observe(time.monotonic() - started)

    async def _purge_job_runs(self, params: dict[str, Any]) -> dict[str, Any]:
        days = int(params.get("retention_days", self._settings.scheduler_run_retention_days))
        cutoff = datetime.now(UTC) - timedelta(days=days)
        return await db.run_in_transaction(self._engine, lambda conn: store.purge_runs(conn, cutoff))

    async def _fail(self, run: Row, error: str, transient: bool) -> None:
        status = next_status_after_failure(run.attempt, self._settings.scheduler_max_attempts, transient)
        delay = None
        if status == RunStatus.FAILED:
            delay = retry_delay_seconds(
                run.attempt,
                base=self._settings.scheduler_retry_base_seconds,
                maximum=self._settings.scheduler_retry_max_seconds,
            )
        log.warning("job run attempt failed", attempt=run.attempt, status=status.value, error=error)
        await self._finish(run, status, error=error, retry_after_seconds=delay)

    async def _finish(self, run: Row, status: RunStatus, **outcome: Any) -> None:
        RUNS.labels(run.job_name, status.value).inc()
        await db.run_in_transaction(
            self._engine, lambda conn: store.finish_run(conn, run.id, self.identity, status=status, **outcome)
        )

    async def close(self) -> None:
        """Stops the attempts in flight; each records itself as interrupted."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
