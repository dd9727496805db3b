"""Backend streams behind the gateway's Server-Sent Events that outlive a backend replica.

A server-streaming call is pinned to the replica that took it. When that replica dies
(kill -9, a crash, or the connection cut at its maximum age) the call fails with
UNAVAILABLE; the gateway then opens the same call again, which the channel's round-robin
balancer places on a replica that is still up, and the client's SSE stream goes on.

None of the Watch RPCs carries a resume token, so what a client sees across a
resubscription is what each RPC's first message gives:

- WatchBatch starts with the batch as it is now: nothing is lost (each message is the
  whole batch). When that first message equals the last one sent it is dropped, so the
  client sees no repeat.
- WatchNotifications starts with the unread count: a notification created while no
  replica was subscribed shows in that count but is not sent by itself (the inbox lists it).
- WatchJobRuns sends changes only: a run that started or changed in the gap (the
  backoff below, well under a second on a kill -9) is not sent until it changes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

# Attempts in a row without a message or a stable subscription in between, then the
# stream ends with `event: error` as before. Each attempt is itself retried by the
# channel's retry policy (libs/clients.py) while no replica answers: three take ~6 s.
RESUBSCRIBE_ATTEMPTS = 3
# Pause before the first attempt (doubled for each further one): long enough for the
# channel to see the dead replica's connection close and pick another.
RESUBSCRIBE_BACKOFF_SECONDS = 0.1
# A subscription that lasted this long counts as healthy: its failure starts a new count.
STABLE_SECONDS = 10.0

log = structlog.get_logger("loom.gateway")

OpenCall = Callable[[float | None], grpc.aio.UnaryStreamCall]


class ResubscribingStream:
    """A server-streaming call opened again, on another replica, when it fails with UNAVAILABLE."""

    def __init__(self, open_call: OpenCall, timeout: float | None, *, method: str) -> None:
        self._open, self._method = open_call, method
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._call = open_call(timeout)
        self._opened = time.monotonic()
        self._failures = 0
        self._last: Any = None
        self._after_resubscribe = False
        self.resubscriptions = 0

    async def read(self) -> Any:
        """The next message or grpc.aio.EOF; raises the call's error when it cannot resubscribe."""
        while True:
            try:
                item = await self._call.read()
            except grpc.aio.AioRpcError as error:
                await self._resubscribe(error)
                continue
            if item is grpc.aio.EOF:
                return item
            self._failures = 0
            repeat = self._after_resubscribe and item == self._last
            self._after_resubscribe = False
            if not repeat:
                self._last = item
                return item

    async def _resubscribe(self, error: grpc.aio.AioRpcError) -> None:
        if time.monotonic() - self._opened >= STABLE_SECONDS:
            self._failures = 0
        pause = RESUBSCRIBE_BACKOFF_SECONDS * 2**self._failures
        remaining = None if self._deadline is None else self._deadline - time.monotonic() - pause
        if error.code() != grpc.StatusCode.UNAVAILABLE or self._failures >= RESUBSCRIBE_ATTEMPTS:
            raise error
        if remaining is not None and remaining <= 0:
            raise error
        self._failures += 1
        self._call.cancel()
        await asyncio.sleep(pause)
        self._call = self._open(remaining)
        self._opened = time.monotonic()
        self._after_resubscribe = True
        self.resubscriptions += 1
        log.info("stream resubscribed", method=self._method, attempt=self._failures, error=error.details())

    async def first_message_or_failure(self, grace: float) -> asyncio.Future:
        """Starts reading; an error within `grace` seconds is raised (its real HTTP status)."""
        pending = asyncio.ensure_future(self.read())
        try:
            await asyncio.wait({pending}, timeout=grace)
            if pending.done():
                pending.result()
        except BaseException:
            pending.cancel()
            self.cancel()
            raise
        return pending

    def cancel(self) -> None:
        self._call.cancel()
