"""WatchJobRuns' source: every insert or update of a job run, from any replica.

A trigger on scheduler.job_runs NOTIFYs the run's id; each replica LISTENs on one
connection of its own (opened when the first watcher arrives), reads each changed
run once, and hands it to every watcher whose filter matches.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.errors import Unavailable
from libs.tasks import cancel_and_wait
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import RunRecord

log = structlog.get_logger("loom.scheduler.watch")

CHANNEL = "scheduler_job_runs"
WATCHER_BACKLOG = 1000
RECONNECT_SECONDS = 1.0


class _Watcher:
    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self.queue: asyncio.Queue[RunRecord] = asyncio.Queue(WATCHER_BACKLOG)
        self.overflowed = False

    def offer(self, run: RunRecord) -> None:
        if self.job_name and run.job_name != self.job_name:
            return
        try:
            self.queue.put_nowait(run)
        except asyncio.QueueFull:
            self.overflowed = True


class RunWatch:
    def __init__(self, engine: AsyncEngine, conninfo: str) -> None:
        self._engine, self._conninfo = engine, conninfo
        self._watchers: set[_Watcher] = set()
        self._listener: asyncio.Task | None = None
        self._listening = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, job_name: str) -> AsyncIterator[AsyncIterator[RunRecord]]:
        """Runs as they are created or change, from the moment this is entered."""
        watcher = _Watcher(job_name)
        self._watchers.add(watcher)
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="job-run-watch")
        try:
            await self._listening.wait()
            yield self._follow(watcher)
        finally:
            self._watchers.discard(watcher)

    @staticmethod
    async def _follow(watcher: _Watcher) -> AsyncIterator[RunRecord]:
        while True:
            run = await watcher.queue.get()
            if watcher.overflowed:
                raise Unavailable("this watcher fell behind the job-run stream; watch again")
            yield run

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    async for notice in conn.notifies():
                        await self._publish(uuid.UUID(notice.payload))
            except (psycopg.Error, OSError) as error:
                log.warning("job-run watch connection lost", error=str(error))
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _publish(self, run_id: uuid.UUID) -> None:
        if not self._watchers:
            return
        async with self._engine.connect() as conn:
            run = await run_store.get_run(conn, run_id)
        if run is not None:
            for watcher in list(self._watchers):
                watcher.offer(run)

    async def close(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)
