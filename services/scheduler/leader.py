"""Leader election, and the one APScheduler that the leader drives.

Every replica keeps one dedicated PostgreSQL connection (outside the pool) that
holds two session advisory locks:
- its *liveness* lock, keyed by the replica: a run whose replica no longer holds
  it was cut short, and is marked interrupted;
- the *leader* lock, which one replica at a time wins with pg_try_advisory_lock.
Only the leader runs an APScheduler (with its SQLAlchemy job store in the
scheduler schema), so the job store is never driven by two schedulers. When the
leader dies its connection closes, PostgreSQL drops its locks, and a standby
polling the lock takes over within one poll interval. Should two ever overlap
(a leader cut off from the database but not yet aware), the job-run log's unique
(job, scheduled time) index still lets each firing run once.

Replicas serve the API alike: PauseJob, ResumeJob and UpdateSchedule change the
`jobs` table (raising its version); the leader applies changed versions to its
job store on each tick.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from datetime import UTC, datetime

import psycopg
import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Gauge
from sqlalchemy import Row, create_engine, pool
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import db
from libs.scratch_db import plain_url
from services.scheduler import store
from services.scheduler.domain import JOBS, build_trigger, same_trigger, zone
from services.scheduler.runner import Runner
from services.scheduler.settings import SchedulerSettings

log = structlog.get_logger("loom.scheduler.leader")

LEADING = Gauge("loom_scheduler_leader", "1 while this replica leads (fires the schedule), else 0.")


def replica_identity() -> store.Runner:
    name = f"{socket.gethostname()[:40]}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
    # Non-negative 31-bit, so it reads the same as pg_locks.objid (an unsigned oid).
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF
    return store.Runner(name, key)


async def fire_scheduled(job_name: str, *firing: object) -> None:
    """The callable every APScheduler job stores, with the job name as its argument.

    FiringExecutor appends what only the firing replica knows: its runner and the
    scheduled time (APScheduler checks stored arguments against this signature).
    """
    runner, scheduled_time = firing
    assert isinstance(runner, Runner) and isinstance(scheduled_time, datetime)
    await runner.fire_scheduled(job_name, scheduled_time)


class FiringExecutor(BaseExecutor):
    """Runs APScheduler's firings on the event loop through this replica's Runner, and
    applies the misfire grace time (a firing missed by more is recorded as skipped)."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self._runner = runner

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        task = asyncio.get_running_loop().create_task(self._fire(job, run_times))
        task.add_done_callback(lambda done: self._settle(job.id, done))

    async def _fire(self, job: Job, run_times: list[datetime]) -> None:
        for run_time in run_times:
            late = (datetime.now(UTC) - run_time).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                await self._runner.record_skipped_firing(
                    job.id, run_time, f"missed by {late:.0f}s (misfire grace {job.misfire_grace_time}s)"
                )
            else:
                await job.func(*job.args, self._runner, run_time)

    def _settle(self, job_id: str, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            self._run_job_success(job_id, [])
        else:
            self._run_job_error(job_id, task.exception(), task.exception().__traceback__)


class Replica:
    """This process's place among the scheduler replicas (a background task)."""

    def __init__(self, engine: AsyncEngine, runner: Runner, settings: SchedulerSettings) -> None:
        self._engine, self._runner, self._settings = engine, runner, settings
        self._identity = runner.identity
        self._conninfo = plain_url(db.async_url(settings.database_url))
        # APScheduler's job store is synchronous; a small pool of its own.
        self._store_engine = create_engine(
            db.async_url(settings.database_url), poolclass=pool.QueuePool, pool_size=1, max_overflow=1,
            pool_pre_ping=True,
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._bookkeeping: set[asyncio.Task] = set()
        self.lock_held = asyncio.Event()  # liveness lock taken (startup recovery done)

    @property
    def leading(self) -> bool:
        return self._scheduler is not None

    async def run(self) -> None:
        poll = self._settings.scheduler_leader_poll_seconds
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=f"loom-scheduler {self._identity.name}"[:63]
                )
            except (psycopg.Error, OSError) as error:
                log.warning("cannot reach the database", error=str(error))
                await asyncio.sleep(poll)
                continue
            try:
                await self._hold(conn, poll)
            except (psycopg.Error, OSError, TimeoutError) as error:
                log.warning("lost the lock connection; standing by", error=str(error))
            except Exception:
                # e.g. the job store failing while taking the lead: let go, try again.
                log.exception("replica failed; releasing its locks")
            finally:
                self._step_down()
                await conn.close()
            await asyncio.sleep(poll)

    async def _hold(self, conn: psycopg.AsyncConnection, poll: float) -> None:
        async def query(sql: str, *args: int) -> object:
            cursor = await asyncio.wait_for(conn.execute(sql, args), timeout=max(5.0, 5 * poll))
            return (await cursor.fetchone())[0]

        await query("SELECT pg_advisory_lock(%s, %s)", store.REPLICA_LOCK_NAMESPACE, self._identity.key)
        await self._recover()
        self.lock_held.set()
        while True:
            if not self.leading:
                if await query("SELECT pg_try_advisory_lock(%s, %s)", store.LEADER_LOCK_NAMESPACE, 0):
                    await self._lead()
            else:
                await query("SELECT 1")
                await self._tick()
            await asyncio.sleep(poll)

    async def _recover(self) -> None:
        interrupted = await db.run_in_transaction(self._engine, store.mark_orphans_interrupted)
        for run in interrupted:
            log.warning("run marked interrupted", run_id=str(run.id), job=run.job_name, runner=run.runner)

    async def _lead(self) -> None:
        log.info("leading: this replica fires the schedule", replica=self._identity.name)
        scheduler = AsyncIOScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(
                    engine=self._store_engine, tablename="apscheduler_jobs", tableschema="scheduler"
                )
            },
            executors={"default": FiringExecutor(self._runner)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self._settings.scheduler_misfire_grace_seconds,
            },
            timezone=zone(self._settings.scheduler_time_zone),
        )
        scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        scheduler.start(paused=True)
        self._scheduler = scheduler
        LEADING.set(1)
        for job in scheduler.get_jobs():
            if job.id not in JOBS:
                scheduler.remove_job(job.id)
        async with self._engine.connect() as conn:
            rows = await store.job_rows(conn)
        for row in rows:
            # A job the store already holds as configured keeps its next run time, so
            # firings missed while no replica led are coalesced into one.
            stored = scheduler.get_job(row.name)
            wanted = build_trigger(store.schedule_of(row), self._settings.scheduler_time_zone)
            if stored is None or row.version != row.applied_version or not same_trigger(stored.trigger, wanted):
                await self._apply(row)
        scheduler.resume()

    async def _tick(self) -> None:
        """The leader's periodic work: apply changed jobs, start due retries, sweep orphans."""
        try:
            async with self._engine.connect() as conn:
                changed = await store.unapplied_jobs(conn)
            for row in changed:
                await self._apply(row)
            await self._runner.start_due_retries()
            await self._recover()
        except Exception:
            # The lock connection is fine (checked just before); retry next tick.
            log.exception("leader tick failed")

    async def _apply(self, row: Row) -> None:
        assert self._scheduler is not None
        trigger = build_trigger(store.schedule_of(row), self._settings.scheduler_time_zone)
        if self._scheduler.get_job(row.name) is None:
            self._scheduler.add_job(
                fire_scheduled, trigger, args=[row.name], id=row.name, name=row.name, replace_existing=True,
                **({"next_run_time": None} if row.paused else {}),
            )
        elif row.paused:
            self._scheduler.modify_job(row.name, trigger=trigger, next_run_time=None)
        else:
            self._scheduler.reschedule_job(row.name, trigger=trigger)
        await db.run_in_transaction(self._engine, lambda conn: store.mark_applied(conn, row.name, row.version))
        log.info("job applied", job=row.name, schedule=str(trigger), paused=row.paused, version=row.version)

    def _on_max_instances(self, event: JobSubmissionEvent) -> None:
        task = asyncio.get_running_loop().create_task(
            self._runner.record_skipped_firing(
                event.job_id, event.scheduled_run_times[-1], "the previous firing was still running"
            )
        )
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)

    def _step_down(self) -> None:
        if self._scheduler is not None:
            log.info("no longer leading", replica=self._identity.name)
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            LEADING.set(0)

    def close(self) -> None:
        self._step_down()
        self._store_engine.dispose()
