"""Group commit: concurrent units of work share one transaction and one WAL flush.

An order on a hot batch holds the batch's row lock until its commit is durable, so
one transaction per order serialises every order of a category on fsync. Instead,
units submitted while a transaction is in flight wait for it, then run together
in the next one: each under its own SAVEPOINT (a unit that fails rolls back only
itself and gets its own error), one COMMIT for all, and no caller hears anything
before that commit returned (nothing acknowledged is lost to a crash).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.db import is_transient, run_in_transaction
from libs.errors import Unavailable

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass
class _Unit:
    work: Work
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommitter:
    """Runs submitted work in shared transactions, one transaction in flight at a time."""

    def __init__(self, engine: AsyncEngine, *, attempts: int, max_group: int) -> None:
        self._engine = engine
        self._attempts = attempts
        self._max_group = max_group
        self._waiting: list[_Unit] = []
        self._flusher: asyncio.Task | None = None

    async def submit(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """work(conn)'s result once the transaction it ran in has committed; its error otherwise.

        Work must be repeatable: a transient failure (deadlock, lost connection) reruns the
        whole group. A caller that gives up while waiting is dropped if its group has not
        started yet; once started, its work commits anyway (a retry with the same
        idempotency key then finds the answer)."""
        unit = _Unit(work)
        self._waiting.append(unit)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="batch-group-commit")
        return await unit.answer

    async def close(self) -> None:
        """Lets the group in flight finish; later waiters were never started."""
        if self._flusher is not None:
            with suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush(self) -> None:
        group: list[_Unit] = []
        try:
            while self._waiting:
                group = [u for u in self._waiting[: self._max_group] if not u.answer.done()]
                del self._waiting[: self._max_group]
                if group:
                    await self._commit(group)
        finally:
            self._flusher = None
            for unit in group + self._waiting:  # only when the flusher itself was cancelled
                if not unit.answer.done():
                    unit.answer.set_exception(Unavailable("the batch service is shutting down; retry"))
            self._waiting.clear()

    async def _commit(self, group: list[_Unit]) -> None:
        try:
            outcomes = await run_in_transaction(self._engine, lambda conn: _apply(conn, group), attempts=self._attempts)
        except Exception as error:  # the shared transaction failed: nothing of the group was written
            outcomes = [error] * len(group)
        for unit, outcome in zip(group, outcomes, strict=True):
            if unit.answer.done():
                continue
            if isinstance(outcome, BaseException):
                unit.answer.set_exception(outcome)
            else:
                unit.answer.set_result(outcome)


async def _apply(conn: AsyncConnection, group: list[_Unit]) -> list[Any]:
    """Each unit under its own savepoint; a transient failure aborts (and retries) the whole group.

    The savepoint statements go straight to the driver: SQLAlchemy's nested-transaction
    bookkeeping costs more CPU per unit than the unit's own statements."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    outcomes: list[Any] = []
    for unit in group:
        await driver.execute("SAVEPOINT unit")
        try:
            outcomes.append(await unit.work(conn))
        except Exception as error:
            if is_transient(error):
                raise
            await driver.execute("ROLLBACK TO SAVEPOINT unit")
            outcomes.append(error)
        else:
            await driver.execute("RELEASE SAVEPOINT unit")
    return outcomes
