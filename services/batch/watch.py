"""Live batch changes for WatchBatch, from PostgreSQL LISTEN/NOTIFY.

Every transaction that changes a batch calls pg_notify('loom_batch', id) (or '*'
after set-based orchestration); the notification arrives after commit in every
replica. One listening connection per process fans changes out to the streams
watching those batches: a stream wakes only when its batch changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import psycopg
import structlog
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from services.batch import store

log = structlog.get_logger("loom.batch.watch")
RECONNECT_SECONDS = 1.0


class LatestBatch:
    """A mailbox holding only the newest version of a batch: slow readers skip stale ones."""

    def __init__(self) -> None:
        self._row: RowMapping | None = None
        self._ready = asyncio.Event()

    def put(self, row: RowMapping) -> None:
        self._row = row
        self._ready.set()

    async def get(self) -> RowMapping:
        await self._ready.wait()
        self._ready.clear()
        assert self._row is not None
        return self._row


class BatchWatcher:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._watchers: dict[str, set[LatestBatch]] = {}
        self._listener: asyncio.Task | None = None
        self._listening = asyncio.Event()

    @asynccontextmanager
    async def watch(self, batch_id: str) -> AsyncIterator[LatestBatch]:
        """Subscribes to one batch for the block; returns once the listener is live."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="batch-watch-listener")
        await self._listening.wait()
        mailbox = LatestBatch()
        self._watchers.setdefault(batch_id, set()).add(mailbox)
        try:
            yield mailbox
        finally:
            self._watchers[batch_id].discard(mailbox)
            if not self._watchers[batch_id]:
                del self._watchers[batch_id]

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {store.WATCH_CHANNEL}")
                    if self._listening.is_set():  # reconnected: changes may have been missed
                        await self._refresh(set(self._watchers))
                    self._listening.set()
                    async for notification in conn.notifies():
                        if notification.payload == store.ALL_BATCHES:
                            await self._refresh(set(self._watchers))
                        elif notification.payload in self._watchers:
                            await self._refresh({notification.payload})
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the listener must outlive database restarts
                log.warning("batch watch listener lost its connection", error=type(error).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _refresh(self, batch_ids: set[str]) -> None:
        if not batch_ids:
            return
        async with self._engine.connect() as conn:
            rows = await store.get_batches(conn, sorted(batch_ids))
        for row in rows:
            for mailbox in self._watchers.get(str(row["id"]), ()):
                mailbox.put(row)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener
