"""The batch schema's metadata and what every store module uses to read rows."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import InvalidArgument, NotFound
from libs.idempotency import idempotency_table

METADATA = MetaData(schema="batch")
IDEMPOTENCY = idempotency_table(METADATA)


def parse_uuid(field: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument.field(field, "must be a UUID") from None


async def fetch_one(conn: AsyncConnection, sql: str, **params: Any) -> RowMapping | None:
    return (await conn.execute(text(sql), params)).mappings().first()


async def fetch_all(conn: AsyncConnection, sql: str, **params: Any) -> list[RowMapping]:
    return list((await conn.execute(text(sql), params)).mappings().all())


async def fetch_by_id(
    conn: AsyncConnection, table: str, resource: str, field: str, row_id: str, *, for_update: bool = False
) -> RowMapping:
    """The row of batch.<table> with that id (a UUID, else INVALID_ARGUMENT on field); NOT_FOUND when none."""
    row = await fetch_one(
        conn,
        f"SELECT * FROM batch.{table} WHERE id = :id" + (" FOR UPDATE" if for_update else ""),
        id=parse_uuid(field, row_id),
    )
    if row is None:
        raise NotFound(resource, row_id)
    return row


def after_key(after: list | None) -> dict[str, Any]:
    """The parameters :after_time and :after_id of a listing's keyset (create_time, id); None for the first page."""
    return {"after_time": after[0] if after else None, "after_id": after[1] if after else None}


async def advisory_xact_lock(conn: AsyncConnection, key: str) -> None:
    """Waits for, then holds until the transaction ends, the lock named key (across replicas)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
