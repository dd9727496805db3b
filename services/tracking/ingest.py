"""Turning requests into stored events: enrichment and the group commit.

`Enricher` adds country (offline GeoIP data shipped with geoip2fast), browser/OS/device
(ua-parser) and the salted IP hash. `GroupCommitter` lets many concurrent calls share
one transaction (leader/follower): each call queues its events and waits; a free
writer takes everything queued so far at once, with no timer, stores it in one
transaction (usually one set-based statement) and commits, then wakes every
caller in the group. While it commits, new calls queue up for the next free writer.
A call therefore returns only after its events are committed.

Like PostgreSQL's commit_delay, a writer may wait a little for a group to grow, but
only once calls have been seen arriving while another group was being written: the
callers are then concurrent and the server busy, and each tiny group would cost more
CPU (a statement, a commit) than the wait costs them. A lone caller never waits, and
the wait ends early once the group holds `group_calls` calls or a full batch of events.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import lru_cache

import structlog
from geoip2fast import GeoIP2Fast
from ua_parser import parse as parse_user_agent

from libs.errors import Unavailable
from services.tracking.domain import Agent, Event, Outcome, device_class

log = structlog.get_logger("loom.tracking.ingest")
# Ids need to be unique, not secret: a seeded PRNG spares a system call per event.
_random = random.Random()  # seeded from os.urandom


VERSION_7 = 0x7 << 76
VARIANT = 0b10 << 14  # the top bits of the clock-sequence group
RAND_A_BITS = 12
# rand_b (62 bits) is the 14 low bits of the clock-sequence group and the 48-bit node group.
CLOCK_SEQ_RANDOM_BITS = 14
NODE_START_BITS = 47  # leaves room to count up by any batch size without a carry


def uuid7_batch(count: int) -> list[str]:
    """count time-ordered UUIDs (RFC 9562 version 7), as strings, for one batch.

    New rows land at the right edge of the index. One timestamp, one rand_a and one
    random start of rand_b serve the whole batch, the ids counting up from it (RFC 9562's
    "monotonic random" method): ids stay unique, a batch costs one random draw instead
    of one per id, and only the last group (12 hex digits) differs from id to id, so an
    id is one formatted number after a shared prefix.
    """
    head = f"{(time.time_ns() // 1_000_000) << 80 | VERSION_7 | _random.getrandbits(RAND_A_BITS) << 64:032x}"
    clock_seq = VARIANT | _random.getrandbits(CLOCK_SEQ_RANDOM_BITS)
    prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{clock_seq:04x}-"
    start = _random.getrandbits(NODE_START_BITS)
    return [f"{prefix}{node:012x}" for node in range(start, start + count)]


def uuid7() -> str:
    [one] = uuid7_batch(1)
    return one


class Enricher:
    def __init__(self) -> None:
        self._geo = GeoIP2Fast(verbose=False)
        self.agent("Mozilla/5.0")  # ua-parser loads its rules lazily; pay that at start-up

    @lru_cache(maxsize=65536)  # noqa: B019 - one Enricher per process, lives as long as it
    def country(self, ip: str) -> str | None:
        try:
            code = self._geo.lookup(ip).country_code
        except Exception:  # noqa: BLE001 - an unparseable peer address has no country
            return None
        return code if len(code) == 2 and code.isalpha() else None

    @lru_cache(maxsize=8192)  # noqa: B019
    def agent(self, user_agent: str) -> Agent:
        if not user_agent:
            return Agent(None, None, "unknown")
        parsed = parse_user_agent(user_agent)
        browser = parsed.user_agent.family if parsed.user_agent else None
        os_family = parsed.os.family if parsed.os else None
        device_family = parsed.device.family if parsed.device else ""
        return Agent(browser, os_family, device_class(user_agent, device_family, os_family or ""))


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
        group, size = [], 0
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
