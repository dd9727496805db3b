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
indexes — (job, scheduled time) for the schedule, (backfill, slot) for backfills —
still let each firing and each slot run once.

Replicas serve the API alike: job changes raise the `jobs` row's version; the
leader applies changed versions to its job store on each tick, starts due
retries, firings left waiting and backfill slots. APScheduler hands every due
firing to firing.py (coalesce off, no misfire grace of its own): the job's
catch-up window and overlap policy decide there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from datetime import datetime

import psycopg
import structlog
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import Gauge
from sqlalchemy import create_engine, pool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import db
from libs.connection_budget import SCHEDULER_JOB_STORE_MAX_OVERFLOW, SCHEDULER_JOB_STORE_POOL_SIZE
from libs.scratch_db import plain_url
from services.scheduler import backfilling
from services.scheduler.domain.schedules import build_trigger, same_trigger, zone
from services.scheduler.firing import Firings
from services.scheduler.runner import Runner
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import LEADER_LOCK_NAMESPACE, REPLICA_LOCK_NAMESPACE
from services.scheduler.store import backfills as backfill_store
from services.scheduler.store import jobs as job_store
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import JobRecord, RunRecord
from services.scheduler.store.records import Runner as Identity

log = structlog.get_logger("loom.scheduler.leader")

LEADING = Gauge("loom_scheduler_leader", "1 while this replica leads (fires the schedule), else 0.")


# APScheduler's per-job instance cap would drop firings silently; the overlap policy
# decides instead, and a firing's hand-over returns at once (see FiringExecutor).
MAX_INSTANCES = 10_000


def replica_identity() -> Identity:
    name = f"{socket.gethostname()[:40]}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
    # Non-negative 31-bit, so it reads the same as pg_locks.objid (an unsigned oid).
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF
    return Identity(name, key)


async def fire_scheduled(job_name: str, *firing: object) -> None:
    """The callable every APScheduler job stores, with the job name as its argument.

    FiringExecutor appends what only the firing replica knows: its Firings and the
    due times (APScheduler checks stored arguments against this signature).
    """
    firings, times = firing
    assert isinstance(firings, Firings) and isinstance(times, list)
    await firings.fire(job_name, times)


class FiringExecutor(BaseExecutor):
    """Hands APScheduler's due firings (all of them: coalescing is the job's catch-up
    policy's call) to firing.py on the event loop."""

    def __init__(self, firings: Firings) -> None:
        super().__init__()
        self._firings = firings

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        task = asyncio.get_running_loop().create_task(job.func(*job.args, self._firings, list(run_times)))
        task.add_done_callback(lambda done: self._settle(job.id, done))

    def _settle(self, job_id: str, task: asyncio.Task) -> None:
        error = None if task.cancelled() else task.exception()
        if error is None:
            self._run_job_success(job_id, [])
        else:
            self._run_job_error(job_id, error, error.__traceback__)


class Replica:
    """This process's place among the scheduler replicas (a background task)."""

    def __init__(self, engine: AsyncEngine, runner: Runner, settings: SchedulerSettings) -> None:
        self._engine, self._runner, self._settings = engine, runner, settings
        self._firings = Firings(engine, runner, settings)
        self._identity = runner.identity
        assert settings.database_url is not None  # the scheduler's settings require one
        self._conninfo = plain_url(db.async_url(settings.database_url))
        # APScheduler's job store is synchronous; a small pool of its own.
        self._store_engine = create_engine(
            db.async_url(settings.database_url), poolclass=pool.QueuePool,
            pool_size=SCHEDULER_JOB_STORE_POOL_SIZE, max_overflow=SCHEDULER_JOB_STORE_MAX_OVERFLOW, pool_pre_ping=True,
        )
        self._scheduler: AsyncIOScheduler | None = None
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
            async with asyncio.timeout(max(5.0, 5 * poll)):
                cursor = await conn.execute(sql, args)
            row = await cursor.fetchone()
            assert row is not None  # a SELECT of a function always returns one row
            return row[0]

        await query("SELECT pg_advisory_lock(%s, %s)", REPLICA_LOCK_NAMESPACE, self._identity.key)
        await self._recover()
        self.lock_held.set()
        while True:
            if not self.leading:
                if await query("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK_NAMESPACE, 0):
                    await self._lead()
            else:
                await query("SELECT 1")
                await self._tick()
            await self._stop_cancelled()
            await asyncio.sleep(poll)

    async def _stop_cancelled(self) -> None:
        try:
            await self._runner.stop_cancelled()
        except Exception:  # noqa: BLE001 - the database blinked; asked again next tick
            log.exception("checking for cancelled runs failed")

    async def _recover(self) -> None:
        interrupted = await db.run_in_transaction(self._engine, run_store.mark_orphans_interrupted)
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
            executors={"default": FiringExecutor(self._firings)},
            job_defaults={"coalesce": False, "max_instances": MAX_INSTANCES, "misfire_grace_time": None},
            timezone=zone(self._settings.scheduler_time_zone),
        )
        scheduler.start(paused=True)
        self._scheduler = scheduler
        LEADING.set(1)
        async with self._engine.connect() as conn:
            records = await job_store.job_records(conn)
        self._remove_deleted({job.name for job in records})
        for job in records:
            # A job the store already holds as configured keeps its next run time, so
            # firings missed while no replica led reach its catch-up policy.
            stored = scheduler.get_job(job.name)
            wanted = build_trigger(job.schedule, self._settings.scheduler_time_zone)
            if stored is None or job.version != job.applied_version or not same_trigger(stored.trigger, wanted):
                await self._apply(job)
        scheduler.resume()

    def _remove_deleted(self, names: set[str]) -> None:
        assert self._scheduler is not None
        for stored in self._scheduler.get_jobs():
            if stored.id not in names:
                self._scheduler.remove_job(stored.id)

    async def _tick(self) -> None:
        """The leader's periodic work: apply changed jobs, start due retries, sweep
        orphans, start firings left waiting and backfill slots."""
        try:
            async with self._engine.connect() as conn:
                changed = await job_store.unapplied_jobs(conn)
                names = await job_store.job_names(conn)
            self._remove_deleted(names)
            for job in changed:
                await self._apply(job)
            await self._runner.start_due_retries()
            await self._recover()
            await self._start_waiting()
        except Exception:
            # The lock connection is fine (checked just before); retry next tick.
            log.exception("leader tick failed")

    async def _start_waiting(self) -> None:
        """Firings and backfill slots whose start no ending run triggered (their
        predecessor's replica died, or a backfill was just created)."""

        async def waiting_firings(conn: AsyncConnection) -> list[tuple[RunRecord, JobRecord]]:
            started = []
            for name in await run_store.jobs_with_waiting_firings(conn):
                job = await job_store.lock_job(conn, name)
                run = await run_store.start_waiting_firing(conn, name, self._identity) if job else None
                if run is not None and job is not None:
                    started.append((run, job))
            return started

        for run, job in await db.run_in_transaction(self._engine, waiting_firings):
            self._runner.launch(run, job)
        async with self._engine.connect() as conn:
            running = await backfill_store.running_backfills(conn)
        for backfill in running:

            async def resume(conn: AsyncConnection, backfill_id=backfill.id, name=backfill.job_name):
                job = await job_store.get_job(conn, name)
                if job is None:  # deleted since: its backfill ends with it
                    await backfill_store.cancel_backfill(conn, backfill_id, "the job was deleted")
                    return [], None
                return await backfilling.resume(conn, backfill_id, job, self._identity), job

            slots, job = await db.run_in_transaction(self._engine, resume)
            if job is not None:
                self._runner.launch_all(slots, job)

    async def _apply(self, job: JobRecord) -> None:
        assert self._scheduler is not None
        trigger = build_trigger(job.schedule, self._settings.scheduler_time_zone)
        stored = self._scheduler.get_job(job.name)
        if stored is None:
            self._scheduler.add_job(
                fire_scheduled, trigger, args=[job.name], id=job.name, name=job.name, replace_existing=True,
                **({"next_run_time": None} if job.paused else {}),
            )
        elif job.paused:
            self._scheduler.modify_job(job.name, trigger=trigger, next_run_time=None)
        elif job.paused_time is not None and same_trigger(stored.trigger, trigger):
            # Resumed: the firings since the pause are due, and meet the catch-up window.
            self._scheduler.modify_job(
                job.name, next_run_time=stored.trigger.get_next_fire_time(None, job.paused_time)
            )
        else:
            self._scheduler.reschedule_job(job.name, trigger=trigger)
        await db.run_in_transaction(self._engine, lambda conn: job_store.mark_applied(conn, job))
        log.info("job applied", job=job.name, schedule=str(trigger), paused=job.paused, version=job.version)

    def _step_down(self) -> None:
        if self._scheduler is not None:
            log.info("no longer leading", replica=self._identity.name)
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            LEADING.set(0)

    def close(self) -> None:
        self._step_down()
        self._store_engine.dispose()
