"""Leases kept alive by a heartbeat while their work is in progress.

A replica that takes rows to work on (events, executions, waits) leases them for a
short time; `LeaseKeeper` renews every lease the process holds, every third of the
lease, in one statement per kind, so a lease outlives any amount of work while its
replica lives, and lapses soon after the replica dies (kill -9, a lost machine), when
another replica takes the work over. The lease can therefore be a few seconds instead
of "longer than the slowest action".

The renewal is the caller's query, which must renew only leases still held by this
process (its owner token): a renewal that arrives after another replica took a row
over renews nothing, and the id is reported lost (`lost(kind, id)`), so the work can
stop at its next checkpoint instead of resurrecting a lease that is no longer its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable

import structlog

from libs.tasks import wait_for_event

log = structlog.get_logger("loom.leases")


class LeaseLost(Exception):
    """The work's lease is another replica's now: stop, that replica finishes the work."""

    def __init__(self, kind: str, lease_id: str) -> None:
        super().__init__(f"the lease of {kind} {lease_id} was taken over by another replica")
        self.kind, self.lease_id = kind, lease_id


# renew(kind, ids, owner) -> the ids whose lease `owner` still held and renewed (the others are no longer ours).
Renew = Callable[[str, list[str], str], Awaitable[Collection[str]]]


class LeaseKeeper:
    """Renews the leases held within `holding(...)` blocks every `every` seconds (a background task).

    `owner` is this process's token: what it leases it marks with it, and only it renews.
    """

    def __init__(self, renew: Renew, *, every: float, owner: str | None = None) -> None:
        self._renew, self.every = renew, every
        self.owner = owner or str(uuid.uuid4())
        self._held: dict[str, Counter[str]] = {}
        self._lost: set[tuple[str, str]] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ends `run()` after the renewal in flight, if any."""
        self._stopping.set()

    @contextlib.asynccontextmanager
    async def holding(self, kind: str, ids: Iterable[str]) -> AsyncIterator[None]:
        """Keeps the leases of `ids` renewed until the block exits (however it exits)."""
        taken = [str(i) for i in ids]
        held = self._held.setdefault(kind, Counter())
        held.update(taken)
        try:
            yield
        finally:
            held.subtract(taken)
            for lease_id in taken:
                if held[lease_id] <= 0:
                    del held[lease_id]
                    self._lost.discard((kind, lease_id))

    def held(self, kind: str) -> list[str]:
        return sorted(self._held.get(kind, ()))

    def lost(self, kind: str, lease_id: str) -> bool:
        """Whether a renewal found the lease taken over by another replica."""
        return (kind, str(lease_id)) in self._lost

    async def renew_once(self) -> None:
        """One heartbeat: renews every held lease of every kind, notes the ones lost."""
        for kind, held in list(self._held.items()):
            ids = [i for i in held if (kind, i) not in self._lost]
            if not ids:
                continue
            renewed = {str(i) for i in await self._renew(kind, ids, self.owner)}
            for lease_id in ids:
                if lease_id not in renewed and lease_id in held:  # still held: not released meanwhile
                    log.warning("lease lost to another replica", kind=kind, lease_id=lease_id)
                    self._lost.add((kind, lease_id))

    async def run(self) -> None:
        """Heartbeats until `stop()`; a failed one (the database blinked) is tried again next beat.

        Stopping waits for a renewal in flight: cancelling it mid-statement would break its
        connection, and the release at shutdown would open another beside the dying one."""
        while True:
            if await wait_for_event(self._stopping, self.every):
                return
            try:
                await self.renew_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the next beat tries again; fencing keeps work safe
                log.warning("lease renewal failed", error=f"{type(error).__name__}: {error}"[:200])
