"""Group commit: concurrent units of work share one transaction and one WAL flush.

An order on a hot batch holds the batch's row lock until its commit is durable, so
one transaction per order serialises every order of a category on fsync. Instead,
units submitted while a transaction is in flight wait for it, then run together
in the next one: each under its own SAVEPOINT (a unit that fails rolls back only
itself and gets its own error), one COMMIT for all, and no caller hears anything
before that commit returned (nothing acknowledged is lost to a crash).

Each unit is idempotent on its request_id like `libs.idempotency.run_idempotent`, but
the keys of a group are claimed, answered and released with one statement each
instead of two per unit: a failed unit's key is deleted again (a failed request
leaves no key), and a replay inside the same group gets the first one's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.db import is_transient, run_in_transaction
from libs.errors import InvalidArgument, Unavailable
from libs.idempotency import fingerprint, validate_request_id

M = TypeVar("M", bound=Message)
# work(conn, shared): `shared` lives for one attempt of the group's transaction, for what
# its units may reuse from one another (what they read or left under its locks).
Work = Callable[[AsyncConnection, dict], Awaitable[Any]]


@dataclass
class _Unit:
    method: str
    request_id: str
    request_hash: bytes
    response_type: type[Message]
    work: Work
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.request_id


class GroupCommitter:
    """Runs submitted idempotent work in shared transactions, one transaction in flight at a time."""

    def __init__(self, engine: AsyncEngine, keys: Table, *, attempts: int, max_group: int) -> None:
        self._engine = engine
        self._keys = keys.fullname
        self._attempts = attempts
        self._max_group = max_group
        self._waiting: list[_Unit] = []
        self._flusher: asyncio.Task | None = None

    async def submit(
        self, method: str, request: Message, response_type: type[M], work: Callable[[AsyncConnection, dict], Awaitable[M]]
    ) -> M:
        """work(conn, shared)'s answer once the transaction it ran in has committed, once per
        (method, request.request_id): a replay gets the first answer; its error otherwise.

        Work must be repeatable: a transient failure (deadlock, lost connection) reruns the
        whole group. A caller that gives up while waiting is dropped if its group has not
        started yet; once started, its work commits anyway (a retry with the same
        request_id then finds the answer)."""
        request_id = request.request_id  # type: ignore[attr-defined]
        validate_request_id(request_id)
        unit = _Unit(method, request_id, fingerprint(request), response_type, work)
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
            outcomes = await run_in_transaction(
                self._engine, lambda conn: self._apply(conn, group), attempts=self._attempts
            )
        except Exception as error:  # the shared transaction failed: nothing of the group was written
            outcomes = [error] * len(group)
        for unit, outcome in zip(group, outcomes, strict=True):
            if unit.answer.done():
                continue
            if isinstance(outcome, BaseException):
                unit.answer.set_exception(outcome)
            else:
                unit.answer.set_result(outcome)


    async def _apply(self, conn: AsyncConnection, group: list[_Unit]) -> list[Any]:
        """Each claimed unit under its own savepoint; a transient failure aborts (and retries) the whole group.

        The savepoint statements go straight to the driver: SQLAlchemy's nested-transaction
        bookkeeping costs more CPU per unit than the unit's own statements."""
        claimed = await self._claim(conn, group)
        stored = await self._stored(conn, [u for u in group if u.key not in claimed])
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        outcomes: list[Any] = []
        first: dict[tuple[str, str], int] = {}
        shared: dict = {}
        for unit in group:
            earlier = first.setdefault(unit.key, len(outcomes))
            if earlier < len(outcomes):  # a replay inside this group: the first one's answer
                same = group[earlier].request_hash == unit.request_hash
                outcomes.append(outcomes[earlier] if same else _reused())
            elif unit.key not in claimed:  # answered by an earlier transaction
                request_hash, response = stored.get(unit.key, (None, None))
                if response is None:  # its holder gave it up between our claim and our look
                    outcomes.append(Unavailable("the request is being retried elsewhere; retry the same request_id"))
                elif request_hash != unit.request_hash:
                    outcomes.append(_reused())
                else:
                    outcomes.append(unit.response_type.FromString(response))
            else:
                await driver.execute("SAVEPOINT unit")
                try:
                    outcomes.append(await unit.work(conn, shared))
                except Exception as error:
                    if is_transient(error):
                        raise
                    await driver.execute("ROLLBACK TO SAVEPOINT unit")
                    outcomes.append(error)
                else:
                    await driver.execute("RELEASE SAVEPOINT unit")
        ran = [(u, o) for i, (u, o) in enumerate(zip(group, outcomes, strict=True)) if first[u.key] == i and u.key in claimed]
        await self._remember(conn, [(u, o) for u, o in ran if isinstance(o, Message)])
        await self._release(conn, [u for u, o in ran if not isinstance(o, Message)])
        return outcomes

    async def _claim(self, conn: AsyncConnection, group: list[_Unit]) -> set[tuple[str, str]]:
        """Inserts every key not yet taken (waiting for a concurrent holder to finish); the keys this group now owns."""
        rows = await conn.execute(
            text(
                f"""
                INSERT INTO {self._keys} (method, request_id, request_hash)
                SELECT * FROM unnest(CAST(:methods AS text[]), CAST(:ids AS text[]), CAST(:hashes AS bytea[]))
                ON CONFLICT DO NOTHING RETURNING method, request_id
                """
            ),
            {
                "methods": [u.method for u in group],
                "ids": [u.request_id for u in group],
                "hashes": [u.request_hash for u in group],
            },
        )
        return {(r.method, r.request_id) for r in rows}

    async def _stored(self, conn: AsyncConnection, units: list[_Unit]) -> dict[tuple[str, str], tuple[bytes, bytes]]:
        if not units:
            return {}
        rows = await conn.execute(
            text(
                f"""
                SELECT k.method, k.request_id, k.request_hash, k.response FROM {self._keys} k
                JOIN unnest(CAST(:methods AS text[]), CAST(:ids AS text[])) AS u(method, request_id)
                  ON k.method = u.method AND k.request_id = u.request_id
                """
            ),
            {"methods": [u.method for u in units], "ids": [u.request_id for u in units]},
        )
        return {(r.method, r.request_id): (r.request_hash, r.response) for r in rows}

    async def _remember(self, conn: AsyncConnection, answered: list[tuple[_Unit, Message]]) -> None:
        if answered:
            await conn.execute(
                text(
                    f"""
                    UPDATE {self._keys} k SET response = a.response
                    FROM unnest(CAST(:methods AS text[]), CAST(:ids AS text[]), CAST(:responses AS bytea[]))
                         AS a(method, request_id, response)
                    WHERE k.method = a.method AND k.request_id = a.request_id
                    """
                ),
                {
                    "methods": [u.method for u, _ in answered],
                    "ids": [u.request_id for u, _ in answered],
                    "responses": [r.SerializeToString() for _, r in answered],
                },
            )

    async def _release(self, conn: AsyncConnection, failed: list[_Unit]) -> None:
        """A failed request leaves no key behind: its retry runs afresh."""
        if failed:
            await conn.execute(
                text(
                    f"""
                    DELETE FROM {self._keys} k
                    USING unnest(CAST(:methods AS text[]), CAST(:ids AS text[])) AS f(method, request_id)
                    WHERE k.method = f.method AND k.request_id = f.request_id
                    """
                ),
                {"methods": [u.method for u in failed], "ids": [u.request_id for u in failed]},
            )


def _reused() -> InvalidArgument:
    return InvalidArgument.field("request_id", "already used for a different request")
