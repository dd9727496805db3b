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
The audit records of the units answered are written by one more statement in the
group's transaction (`libs.audit`); a failed unit's call records its refusal itself.

A group first runs without savepoints, its units together where the work can do many at
once (`GroupWork.together`: one statement for all, where each alone would cost one or
more round trips) and the rest alone; only when a unit fails is the group rolled back
and run again, each unit alone under its own savepoint, so the failure still rolls back
that unit alone. The committer keeps one connection of its own (the pool's checkout ping
would cost a round trip per group) and sends its own statements to the driver directly:
SQLAlchemy's execution layer costs more CPU per statement than the statement's round trip.
"""

from __future__ import annotations

import asyncio
import contextvars
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from google.protobuf.message import Message
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import audit, tracing
from libs.db import carry_trace, is_transient, transaction_attempts
from libs.domain_errors import InvalidArgument, Unavailable
from libs.idempotency import fingerprint, validate_request_id

M = TypeVar("M", bound=Message)
Item = TypeVar("Item")  # what one unit asks for


class GroupWork(Protocol[Item]):
    """What the units of a group do, in the group's transaction. `shared` is for what units
    may reuse from one another (what they read or left under their locks): it carries over
    from one group to the next as long as their transactions commit, and starts empty again
    after any rollback. Still, others change the database between two groups: what is in
    it may be stale, and must be checked again under the locks before it is relied on."""

    async def together(self, conn: AsyncConnection, shared: dict, items: list[Item]) -> list[Message | None]:
        """The answers of the items it could do at once; None for an item to do alone."""
        ...

    async def alone(self, conn: AsyncConnection, shared: dict, item: Item) -> Message:
        """One item's answer; raises its failure."""
        ...

    def committed(self, items: list[Item]) -> None:
        """These items were applied (not replayed) by a transaction that has now committed."""
        ...


@dataclass
class _Unit(Generic[Item]):
    method: str
    request_id: str
    request_hash: bytes
    response_type: type[Message]
    item: Item
    traceparent: str  # the submitting call's span, linked from the group's commit
    audit_record: audit.Pending | None  # the submitting call's audit record, written with its answer
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.request_id


class _UnitFailed(Exception):
    """A unit of a group run without savepoints failed: the group runs again with them."""


def driver_connection(conn: AsyncConnection) -> psycopg.AsyncConnection:
    """The psycopg connection under conn's open transaction, for statements on the hot path."""
    driver = conn.sync_connection.connection.driver_connection if conn.sync_connection else None
    assert isinstance(driver, psycopg.AsyncConnection)
    return driver


class GroupCommitter(Generic[Item]):
    """Runs submitted idempotent work in shared transactions, one transaction in flight at a time."""

    def __init__(self, engine: AsyncEngine, keys: Table, work: GroupWork[Item], *, attempts: int, max_group: int) -> None:
        self._engine = engine
        self._work = work
        self._keys = keys.fullname
        self._attempts = attempts
        self._max_group = max_group
        self._waiting: list[_Unit[Item]] = []
        self._flusher: asyncio.Task | None = None
        self._conn: AsyncConnection | None = None
        self._shared: dict = {}

    async def submit(self, method: str, request: Message, response_type: type[M], item: Item) -> M:
        """The work's answer for item once the transaction it ran in has committed, once per
        (method, request.request_id): a replay gets the first answer; its error otherwise.

        Work must be repeatable: a transient failure (deadlock, lost connection) reruns the
        whole group. A caller that gives up while waiting is dropped if its group has not
        started yet; once started, its work commits anyway (a retry with the same
        request_id then finds the answer)."""
        request_id = request.request_id  # type: ignore[attr-defined]  # every mutation request declares request_id
        validate_request_id(request_id)
        unit = _Unit(
            method, request_id, fingerprint(request), response_type, item, tracing.current_traceparent(), audit.pending()
        )
        self._waiting.append(unit)
        if self._flusher is None:
            # A context of its own: the flusher serves many calls, not the one that started it.
            self._flusher = asyncio.create_task(self._flush(), name="batch-group-commit", context=contextvars.Context())
        return await unit.answer

    async def close(self) -> None:
        """Lets the group in flight finish; later waiters were never started."""
        if self._flusher is not None:
            with suppress(asyncio.CancelledError):
                await self._flusher
        await self._drop_connection(invalidate=False)

    async def _drop_connection(self, *, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # it may be broken already: a fresh one replaces it either way
                if invalidate:
                    await conn.invalidate()
                await conn.close()

    async def _flush(self) -> None:
        group: list[_Unit[Item]] = []
        try:
            while self._waiting:
                group = [u for u in self._waiting[: self._max_group] if not u.answer.done()]
                del self._waiting[: self._max_group]
                if group:
                    with tracing.span("batch.group_commit", link_to=[u.traceparent for u in group],
                                      attributes={"loom.group_size": len(group)}):
                        await self._commit(group)
        finally:
            self._flusher = None
            for unit in group + self._waiting:  # only when the flusher itself was cancelled
                if not unit.answer.done():
                    unit.answer.set_exception(Unavailable("the batch service is shutting down; retry"))
            self._waiting.clear()

    async def _commit(self, group: list[_Unit[Item]]) -> None:
        outcomes: list[Any]
        try:
            async for attempt in transaction_attempts(self._attempts):
                with attempt:
                    outcomes, applied = await self._transaction(group)
            self._work.committed(applied)
            for unit, outcome in zip(group, outcomes, strict=True):
                if unit.audit_record is not None and isinstance(outcome, Message):
                    unit.audit_record.mark_written()
        # noqa reason: whatever made the shared transaction fail, nothing of the group was written and
        # every caller in it must get an answer, so no exception may escape.
        except Exception as error:  # noqa: BLE001 - answered to every caller of the group below
            if is_transient(error):  # the driver's own errors too, which the interceptor would call INTERNAL
                error = Unavailable("the database is unavailable; retry the same request_id")
            outcomes = [error] * len(group)
        for unit, outcome in zip(group, outcomes, strict=True):
            if unit.answer.done():
                continue
            if isinstance(outcome, BaseException):
                unit.answer.set_exception(outcome)
            else:
                unit.answer.set_result(outcome)


    async def _transaction(self, group: list[_Unit[Item]]) -> tuple[list[Any], list[Item]]:
        """One attempt: the group without savepoints, or with one per unit once a unit failed;
        the outcomes, and the items it applied rather than replayed."""
        if self._conn is None:
            self._conn = await self._engine.connect()
        conn = self._conn
        try:
            try:
                async with conn.begin():
                    await carry_trace(conn)
                    return await self._apply(conn, group, self._shared, careful=False)
            except _UnitFailed:
                self._shared = {}
                async with conn.begin():
                    await carry_trace(conn)
                    return await self._apply(conn, group, self._shared, careful=True)
        except Exception as error:
            self._shared = {}
            if is_transient(error):  # the connection may be gone with the transaction
                await self._drop_connection(invalidate=True)
            raise

    async def _apply(
        self, conn: AsyncConnection, group: list[_Unit[Item]], shared: dict, *, careful: bool
    ) -> tuple[list[Any], list[Item]]:
        """Each claimed unit's answer or failure; a transient failure aborts (and retries) the whole group.

        Careless, the units run together where they can and the rest alone, and any unit's
        failure aborts the group (_UnitFailed); careful, each runs alone under its own
        savepoint and a failure is that unit's outcome."""
        driver = driver_connection(conn)
        claimed = await self._claim(driver, group)
        stored = await self._stored(driver, [u for u in group if u.key not in claimed])
        first: dict[tuple[str, str], int] = {}
        for index, unit in enumerate(group):
            first.setdefault(unit.key, index)
        runs = [i for i, u in enumerate(group) if first[u.key] == i and u.key in claimed]
        done: dict[int, Message] = {}
        if not careful and runs:
            try:
                together = await self._work.together(conn, shared, [group[i].item for i in runs])
            except Exception as error:
                if is_transient(error):
                    raise
                raise _UnitFailed from error
            done = {i: answer for i, answer in zip(runs, together, strict=True) if answer is not None}
        outcomes: list[Any] = []
        for index, unit in enumerate(group):
            earlier = first[unit.key]
            if earlier < index:  # a replay inside this group: the first one's answer
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
            elif index in done:
                outcomes.append(done[index])
            elif not careful:
                try:
                    outcomes.append(await self._work.alone(conn, shared, unit.item))
                except Exception as error:
                    if is_transient(error):
                        raise
                    raise _UnitFailed from error
            else:
                await driver.execute("SAVEPOINT unit")
                try:
                    outcomes.append(await self._work.alone(conn, shared, unit.item))
                except Exception as error:
                    if is_transient(error):
                        raise
                    await driver.execute("ROLLBACK TO SAVEPOINT unit")
                    outcomes.append(error)
                else:
                    await driver.execute("RELEASE SAVEPOINT unit")
        ran = [(u, o) for i, (u, o) in enumerate(zip(group, outcomes, strict=True)) if first[u.key] == i and u.key in claimed]
        answered = [(u, o) for u, o in ran if isinstance(o, Message)]
        await self._remember(driver, answered)
        await self._release(driver, [u for u, o in ran if not isinstance(o, Message)])
        # Every call answered (replays too) is audited as accepted in this transaction.
        answered_calls = zip(group, outcomes, strict=True)
        await audit.write_accepted(
            driver, [u.audit_record for u, o in answered_calls if u.audit_record is not None and isinstance(o, Message)]
        )
        return outcomes, [u.item for u, _ in answered]

    async def _claim(self, driver: psycopg.AsyncConnection, group: list[_Unit]) -> set[tuple[str, str]]:
        """Inserts every key not yet taken (waiting for a concurrent holder to finish); the keys this group now owns.

        The keys' arrays go in binary (%b) here and below: psycopg escapes text arrays element
        by element in Python, a cost that showed per group. Below, the keys are also matched
        with = ANY, so the planner, blind to how few rows unnest yields, looks them up by the
        primary key instead of joining a scan of the whole table (slower with every request)."""
        cursor = await driver.execute(
            f"""
            INSERT INTO {self._keys} (method, request_id, request_hash)
            SELECT * FROM unnest(%(methods)b::text[], %(ids)b::text[], %(hashes)b::bytea[])
            ON CONFLICT DO NOTHING RETURNING method, request_id
            """,
            {
                "methods": [u.method for u in group],
                "ids": [u.request_id for u in group],
                "hashes": [u.request_hash for u in group],
            },
        )
        return {(method, request_id) for method, request_id in await cursor.fetchall()}

    async def _stored(
        self, driver: psycopg.AsyncConnection, units: list[_Unit]
    ) -> dict[tuple[str, str], tuple[bytes, bytes]]:
        if not units:
            return {}
        cursor = await driver.execute(
            f"""
            SELECT k.method, k.request_id, k.request_hash, k.response FROM {self._keys} k
            JOIN unnest(%(methods)b::text[], %(ids)b::text[]) AS u(method, request_id)
              ON k.method = u.method AND k.request_id = u.request_id
            WHERE k.method = ANY(%(methods)b::text[]) AND k.request_id = ANY(%(ids)b::text[])
            """,
            {"methods": [u.method for u in units], "ids": [u.request_id for u in units]},
        )
        return {(method, rid): (request_hash, response) for method, rid, request_hash, response in await cursor.fetchall()}

    async def _remember(self, driver: psycopg.AsyncConnection, answered: list[tuple[_Unit, Message]]) -> None:
        if answered:
            await driver.execute(
                f"""
                UPDATE {self._keys} k SET response = a.response
                FROM unnest(%(methods)b::text[], %(ids)b::text[], %(responses)b::bytea[])
                     AS a(method, request_id, response)
                WHERE k.method = ANY(%(methods)b::text[]) AND k.request_id = ANY(%(ids)b::text[])
                  AND k.method = a.method AND k.request_id = a.request_id
                """,
                {
                    "methods": [u.method for u, _ in answered],
                    "ids": [u.request_id for u, _ in answered],
                    "responses": [r.SerializeToString() for _, r in answered],
                },
            )

    async def _release(self, driver: psycopg.AsyncConnection, failed: list[_Unit]) -> None:
        """A failed request leaves no key behind: its retry runs afresh."""
        if failed:
            await driver.execute(
                f"""
                DELETE FROM {self._keys} k
                USING unnest(%(methods)b::text[], %(ids)b::text[]) AS f(method, request_id)
                WHERE k.method = ANY(%(methods)b::text[]) AND k.request_id = ANY(%(ids)b::text[])
                  AND k.method = f.method AND k.request_id = f.request_id
                """,
                {"methods": [u.method for u in failed], "ids": [u.request_id for u in failed]},
            )


def _reused() -> InvalidArgument:
    return InvalidArgument.field("request_id", "already used for a different request")
