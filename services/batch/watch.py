"""Live batch changes for WatchBatch.

One loop per process looks at the batches being watched (one query for all of
them, only while someone watches) and pushes each new version to the streams
watching that batch; clients get a push stream and never poll. Write paths pay
nothing for it: no trigger and no NOTIFY, whose commit-time global lock would
serialise every PlaceOrder in the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.tasks import cancel_and_wait
from services.batch.records import Batch
from services.batch.store.batches import get_batches

log = structlog.get_logger("loom.batch.watch")


class LatestBatch:
    """A mailbox holding only the newest version of a batch: slow readers skip stale ones."""

    def __init__(self) -> None:
        self._batch: Batch | None = None
        self._ready = asyncio.Event()

    def put(self, batch: Batch) -> None:
        self._batch = batch
        self._ready.set()

    async def get(self) -> Batch:
        await self._ready.wait()
        self._ready.clear()
        assert self._batch is not None
        return self._batch


class BatchWatcher:
    def __init__(self, engine: AsyncEngine, *, interval_seconds: float) -> None:
        self._engine = engine
        self._interval = interval_seconds
        self._watchers: dict[str, set[LatestBatch]] = {}
        self._seen: dict[str, datetime] = {}
        self._someone_watches = asyncio.Event()
        self._loop: asyncio.Task | None = None

    @asynccontextmanager
    async def watch(self, batch_id: str) -> AsyncIterator[LatestBatch]:
        """Subscribes to one batch for the block."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="batch-watch")
        mailbox = LatestBatch()
        self._watchers.setdefault(batch_id, set()).add(mailbox)
        self._someone_watches.set()
        try:
            yield mailbox
        finally:
            self._watchers[batch_id].discard(mailbox)
            if not self._watchers[batch_id]:
                del self._watchers[batch_id]
                self._seen.pop(batch_id, None)
            if not self._watchers:
                self._someone_watches.clear()

    async def _run(self) -> None:
        while True:
            await self._someone_watches.wait()
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a database hiccup must not end the watch loop
                log.warning("batch watch refresh failed", error=type(error).__name__)
            await asyncio.sleep(self._interval)

    async def _refresh(self) -> None:
        async with self._engine.connect() as conn:
            watched = await get_batches(conn, sorted(self._watchers))
        for batch in watched:
            if self._seen.get(batch.id) == batch.update_time:
                continue
            self._seen[batch.id] = batch.update_time
            for mailbox in self._watchers.get(batch.id, ()):
                mailbox.put(batch)

    async def close(self) -> None:
        if self._loop is not None:
            await cancel_and_wait(self._loop)
