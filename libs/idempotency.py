"""Idempotency keys for mutating RPCs: a replayed request_id returns the first answer.

Each service keeps an `idempotency_keys` table in its own schema (see
`idempotency_table`). The key is claimed with INSERT ... ON CONFLICT inside the
same transaction as the mutation: a concurrent duplicate blocks on the unique
index until the first commits, then reads its stored answer, so there is no
check-then-insert race. A failed request leaves no key behind. The claim's own
statement also writes the call's audit record (`libs.audit.with_pending`), replays
included: the claim is, by construction, part of the change's transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs.audit import with_pending
from libs.db import run_in_transaction
from libs.errors import InvalidArgument

M = TypeVar("M", bound=Message)
MAX_REQUEST_ID_LENGTH = 128


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("method", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        Column("request_hash", LargeBinary, nullable=False),
        Column("response", LargeBinary),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("method", "request_id"),
        Index("idempotency_keys_create_time", "create_time"),
    )


def validate_request_id(request_id: str) -> None:
    if not request_id:
        raise InvalidArgument.field("request_id", "required: an idempotency key unique to this request")
    if len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        raise InvalidArgument.field("request_id", f"at most {MAX_REQUEST_ID_LENGTH} printable characters")


def fingerprint(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


async def claim(conn: AsyncConnection, table: Table, method: str, request_id: str, request: Message) -> bytes | None:
    """Claims the key for this transaction (None), or returns the answer already stored;
    either way the call's audit record joins the transaction."""
    request_hash = fingerprint(request)
    claimed = await conn.execute(
        with_pending(
            insert(table)
            .values(method=method, request_id=request_id, request_hash=request_hash)
            .on_conflict_do_nothing()
            .returning(table.c.request_id)
        )
    )
    if claimed.first() is not None:
        return None
    row = (
        await conn.execute(
            select(table.c.request_hash, table.c.response).where(
                table.c.method == method, table.c.request_id == request_id
            )
        )
    ).one()
    if row.request_hash != request_hash:
        raise InvalidArgument.field("request_id", "already used for a different request")
    return row.response


async def remember(conn: AsyncConnection, table: Table, method: str, request_id: str, response: Message) -> None:
    await conn.execute(
        update(table)
        .where(table.c.method == method, table.c.request_id == request_id)
        .values(response=response.SerializeToString())
    )


async def run_idempotent(
    engine: AsyncEngine,
    table: Table,
    method: str,
    request: Message,
    response_type: type[M],
    work: Callable[[AsyncConnection], Awaitable[M]],
    *,
    attempts: int = 6,
) -> M:
    """Runs work(conn) once per (method, request.request_id), in one retried transaction."""
    request_id = request.request_id  # type: ignore[attr-defined]  # every mutation request declares request_id
    validate_request_id(request_id)

    async def attempt(conn: AsyncConnection) -> M:
        stored = await claim(conn, table, method, request_id, request)
        if stored is not None:
            return response_type.FromString(stored)
        response = await work(conn)
        await remember(conn, table, method, request_id, response)
        return response

    return await run_in_transaction(engine, attempt, attempts=attempts)
