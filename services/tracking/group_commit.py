"""Group commit of interactions: many concurrent calls share one transaction.

Leader/follower: each call queues its events and waits; a free writer takes everything
queued so far at once, with no timer, stores it in one transaction (usually one
set-based statement, see store/interactions.py) and commits, then wakes every caller
in the group. While it commits, new calls queue up for the next free writer. A call
therefore returns only after its events are committed.

Like PostgreSQL's commit_delay, a writer may wait a little for a group to grow, but
only once calls have been seen arriving while another group was being written: the
callers are then concurrent and the server busy, and each tiny group would cost more
CPU (a statement, a commit) than the wait costs them. A lone caller never waits, and
the wait ends early once the group holds `group_calls` calls or a full batch of events.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress

import structlog

from libs.domain_errors import Unavailable
from services.tracking.domain import Event, Outcome

log = structlog.get_logger("loom.tracking.ingest")


Flush = Callable[[list[Event]], Awaitable[list[Outcome]]]


class GroupCommitter:
    """Batches concurrent submissions into shared transactions, one writer task per flush
    (each flush typically owning a database connection)."""

    def __init__(self, flushes: list[Flush], *, max_batch: int, delay: float = 0.0, group_calls: int = 1) -> None:
        self._max_batch = max_batch
        self._delay = delay
        self._group_calls = group_calls
        self._pending: deque[tuple[list[Event], asyncio.Future[list[Outcome]]]] = deque()
        self._ready = asyncio.Event()
        self._grown = asyncio.Event()  # the queue holds group_calls calls or a full group of events
        self._queued_events = 0
        self._writing = 0  # groups being written
        self._concurrent = False  # a call arrived while a group was being written
        self._closed = False
        self._writers = [
            asyncio.create_task(self._write_forever(flush), name=f"group-commit-{n}") for n, flush in enumerate(flushes)
        ]

    async def submit(self, events: list[Event]) -> list[Outcome]:
        if self._closed:
            raise Unavailable("the tracking service is shutting down")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        self._queued_events += len(events)
        self._ready.set()
        if self._writing:
            self._concurrent = True
        if not self._may_grow():
            self._grown.set()
        return await future

    def _may_grow(self) -> bool:
        """Whether waiting could make the next group bigger: it has neither group_calls calls nor max_batch events."""
        return len(self._pending) < self._group_calls and self._queued_events < self._max_batch

    async def _let_group_grow(self) -> None:
        if self._delay and self._concurrent and self._may_grow():
            self._grown.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(self._delay):  # unlike wait_for, starts no task per wait
                    await self._grown.wait()
        self._concurrent = False

    def _take_group(self) -> list[tuple[list[Event], asyncio.Future[list[Outcome]]]]:
        group: list[tuple[list[Event], asyncio.Future[list[Outcome]]]] = []
        size = 0
        while self._pending and (not group or size + len(self._pending[0][0]) <= self._max_batch):
            events, future = self._pending.popleft()
            self._queued_events -= len(events)
            if future.done():  # the caller went away before its turn: nothing was promised
                continue
            group.append((events, future))
            size += len(events)
        if not self._pending:
            self._ready.clear()
        return group

    async def _write_forever(self, flush: Flush) -> None:
        while True:
            await self._ready.wait()
            await self._let_group_grow()
            group = self._take_group()
            if not group:
                continue
            events = [event for submitted, _ in group for event in submitted]
            self._writing += 1
            try:
                outcomes = await flush(events)
            except Exception as error:  # noqa: BLE001 - every waiting caller learns of the failure
                log.error("group commit failed", events=len(events), error=type(error).__name__, exc_info=error)
                for _, future in group:
                    if not future.done():
                        future.set_exception(Unavailable("could not store the interactions; retry"))
                continue
            finally:
                self._writing -= 1
            start = 0
            for submitted, future in group:
                if not future.done():
                    future.set_result(outcomes[start : start + len(submitted)])
                start += len(submitted)

    async def close(self) -> None:
        """Stops taking work, lets queued groups commit, then stops the writers."""
        self._closed = True
        while self._pending:
            await asyncio.sleep(0.01)
        for writer in self._writers:
            writer.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
