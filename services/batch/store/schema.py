"""The batch schema's metadata and what every store module uses to read rows."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import InvalidArgument
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


async def advisory_xact_lock(conn: AsyncConnection, key: str) -> None:
    """Waits for, then holds until the transaction ends, the lock named key (across replicas)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
