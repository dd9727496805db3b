"""Executing job runs: one row per attempt in the job-run log, the target call, and
the retries that follow a transient failure until the run is dead-lettered.

When an attempt ends, the same transaction starts what waited for it: the job's
next buffered firing, or the backfill's next slots. Any replica executes the
manual runs it is asked for; the leader executes the schedule's firings, backfill
slots and every due retry (see leader.py). A replica stops its attempts that were
asked to stop (CANCEL_OTHER, a cancelled backfill) on its next tick.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import db, tracing
from libs.clients import ServiceClients
from services.scheduler import backfilling
from services.scheduler.domain.catalogue import IN_PROCESS_PREFIX
from services.scheduler.domain.runs import (
    FINISHED_STATUSES,
    RunStatus,
    TriggerKind,
    next_status_after_failure,
    retry_delay_seconds,
)
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import jobs as job_store
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import JobRecord, RunRecord
from services.scheduler.store.records import Runner as Identity
from services.scheduler.targets import TargetFailure, call_target, declared_targets

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
    def __init__(self, engine: AsyncEngine, clients: ServiceClients, settings: SchedulerSettings,
                 identity: Identity) -> None:
        self._engine, self._clients, self._settings = engine, clients, settings
        self.identity = identity
        self._tasks: dict[uuid.UUID, asyncio.Task] = {}
        self._stopping: set[uuid.UUID] = set()  # asked to stop: ends cancelled, not interrupted

    # --- starting runs -----------------------------------------------------------------

    def launch(self, run: RunRecord | None, job: JobRecord) -> None:
        """Executes a recorded running attempt in the background."""
        if run is None or run.status != RunStatus.RUNNING:
            return
        task = asyncio.get_running_loop().create_task(self._attempt(run, job), name=f"job-run-{run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run.id, None))

    def launch_all(self, runs: list[RunRecord], job: JobRecord) -> None:
        for run in runs:
            self.launch(run, job)

    async def start_due_retries(self) -> int:
        """Starts every retry that is due (the leader calls this on each tick)."""
        started = 0
        while (opened := await db.run_in_transaction(self._engine, self._open_retry)) is not None:
            self.launch(*opened)
            started += 1
        return started

    async def _open_retry(self, conn: AsyncConnection) -> tuple[RunRecord, JobRecord] | None:
        failed = await run_store.claim_due_retry(conn)
        if failed is None:
            return None
        retry = await run_store.insert_run(
            conn,
            job_name=failed.job_name,
            trigger=TriggerKind.RETRY,
            # A backfill slot's retry waits for room in its backfill.
            status=RunStatus.QUEUED if failed.backfill_id else RunStatus.RUNNING,
            runner=self.identity,
            attempt=failed.attempt + 1,
            firing_id=failed.firing_id,
            target_request_id=failed.target_request_id,
            scheduled_time=failed.scheduled_time,
            params=failed.params,
            backfill_id=failed.backfill_id,
        )
        assert retry is not None
        await run_store.link_retry(conn, failed.id, retry.id)
        job = await job_store.get_job(conn, failed.job_name)
        assert job is not None  # claimed only while the job exists, and the job is read in this transaction
        return retry, job

    async def wait(self, run_id: uuid.UUID) -> RunRecord:
        """The run once it has ended (polls when another replica runs it)."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.shield(task)
        while True:
            async with self._engine.connect() as conn:
                run = await run_store.get_run(conn, run_id)
            assert run is not None
            if run.status in FINISHED_STATUSES:
                return run
            await asyncio.sleep(WAIT_POLL_SECONDS)

    async def stop_cancelled(self) -> None:
        """Stops this replica's attempts that were asked to stop."""
        if not self._tasks:
            return
        async with self._engine.connect() as conn:
            asked = await run_store.cancel_requested(conn, self.identity)
        for run_id in asked:
            task = self._tasks.get(run_id)
            if task is not None and run_id not in self._stopping:
                self._stopping.add(run_id)
                task.cancel()

    # --- executing an attempt ----------------------------------------------------------

    async def _attempt(self, run: RunRecord, job: JobRecord) -> None:
        structlog.contextvars.bind_contextvars(request_id=run.target_request_id, job=run.job_name, run_id=str(run.id))
        # A run is its own trace: nothing upstream caused it but the clock (or an operator).
        attributes = {"loom.job": run.job_name, "loom.job_run_id": str(run.id), "loom.attempt": run.attempt}
        with tracing.span("scheduler.job_run", attributes=attributes):
            await self._run_attempt(run, job)

    async def _run_attempt(self, run: RunRecord, job: JobRecord) -> None:
        started = time.monotonic()
        try:
            if job.target.startswith(IN_PROCESS_PREFIX):
                result = await self._purge_job_runs(run.params)
            else:
                target = declared_targets().get(job.target)
                result = await call_target(
                    self._clients,
                    self._settings.target_of(target.service) if target else "",
                    job.target,
                    run.target_request_id,
                    {**job.payload, **run.params},
                    run.scheduled_time,
                    job.deadline_seconds or self._settings.scheduler_job_timeout_seconds,
                )
        except asyncio.CancelledError:
            if run.id in self._stopping:
                self._stopping.discard(run.id)
                await self._finish(run, job, RunStatus.CANCELLED, error="cancelled while running")
                return
            await self._finish(run, job, RunStatus.INTERRUPTED,
                               error="interrupted: the scheduler stopped during the run", follow_up=False)
            raise
        except TargetFailure as failure:
            await self._fail(run, job, str(failure), failure.transient)
        except Exception as error:  # noqa: BLE001 - the scheduler's own housekeeping (database) failed: logged, retried
            log.exception("job run failed")
            await self._fail(run, job, f"{type(error).__name__}: {error}", db.is_transient(error))
        else:
            await self._finish(run, job, RunStatus.SUCCEEDED, result=result)
        finally:
            RUN_SECONDS.labels(run.job_name).observe(time.monotonic() - started)

    async def _purge_job_runs(self, params: dict[str, Any]) -> dict[str, Any]:
        days = int(params.get("retention_days", self._settings.scheduler_run_retention_days))
        cutoff = datetime.now(UTC) - timedelta(days=days)
        audit_days = self._settings.audit_retention_days

        async def purge(conn) -> dict[str, int]:
            return {**await run_store.purge_runs(conn, cutoff), **await run_store.purge_audit_events(conn, audit_days)}

        return await db.run_in_transaction(self._engine, purge)

    async def _fail(self, run: RunRecord, job: JobRecord, error: str, transient: bool) -> None:
        max_attempts = job.max_attempts or self._settings.scheduler_max_attempts
        status = next_status_after_failure(run.attempt, max_attempts, transient)
        delay = None
        if status == RunStatus.FAILED:
            delay = retry_delay_seconds(
                run.attempt,
                base=self._settings.scheduler_retry_base_seconds,
                maximum=self._settings.scheduler_retry_max_seconds,
            )
        log.warning("job run attempt failed", attempt=run.attempt, status=status.value, error=error)
        await self._finish(run, job, status, error=error, retry_after_seconds=delay)

    async def _finish(self, run: RunRecord, job: JobRecord, status: RunStatus, *, follow_up: bool = True,
                      **outcome: Any) -> None:
        RUNS.labels(run.job_name, status.value).inc()

        async def finish(conn: AsyncConnection) -> list[RunRecord] | None:
            await run_store.finish_run(conn, run.id, self.identity, status=status, **outcome)
            if not follow_up:
                return []
            if run.backfill_id is not None:
                return await backfilling.replace_ended_slot(conn, run.backfill_id, job, self.identity)
            if await job_store.lock_job(conn, run.job_name) is None:
                return []
            started = await run_store.start_waiting_firing(conn, run.job_name, self.identity)
            return [started] if started else []

        started = await db.run_in_transaction(self._engine, finish)
        if started is None and run.backfill_id is not None:
            # No successor in place: fill the backfill up, skip or wait per the overlap
            # policy, or end it — under its lock, in a transaction of its own.
            backfill_id = run.backfill_id
            started = await db.run_in_transaction(
                self._engine, lambda conn: backfilling.start_slots(conn, backfill_id, job, self.identity)
            )
        self.launch_all(started or [], job)

    async def close(self) -> None:
        """Stops the attempts in flight; each records itself as interrupted."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
