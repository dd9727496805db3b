"""Windowed facts the rules service asks for: counts over a recent time window, one query each.

A mixin of the batch servicer (it reads `self._engine`), kept apart from the servicer's
own areas: the RPCs are small reads on indexes that exist already (orders by buyer and
creation time; one supplier order per confirmed batch, created at confirmation).
"""

from __future__ import annotations

from datetime import UTC

from loom.batch.v1 import batch_pb2 as pb
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import run_in_transaction
from libs.errors import Violations

RECENT_ORDERS = text("SELECT count(*) FROM batch.orders WHERE buyer_id = :key AND create_time >= :since")
CONFIRMED_BATCHES = text(
    "SELECT count(*) FROM batch.supplier_orders s JOIN batch.batches b ON b.id = s.batch_id "
    "WHERE b.category = :key AND s.create_time >= :since"
)


def _arguments(key_field: str, key: str, request) -> dict:
    violations = Violations()
    violations.check(bool(key), key_field, "required")
    violations.check(request.HasField("start_time"), "start_time", "required")
    violations.raise_if_any()
    return {"key": key, "since": request.start_time.ToDatetime(tzinfo=UTC)}


class WindowedFacts:
    _engine: AsyncEngine

    async def _count(self, query, arguments: dict) -> int:
        async def count(conn) -> int:
            return (await conn.execute(query, arguments)).scalar_one()

        return await run_in_transaction(self._engine, count)

    async def CountRecentOrders(self, request: pb.CountRecentOrdersRequest, context) -> pb.CountRecentOrdersResponse:
        arguments = _arguments("buyer_id", request.buyer_id, request)
        return pb.CountRecentOrdersResponse(count=await self._count(RECENT_ORDERS, arguments))

    async def CountConfirmedBatches(self, request: pb.CountConfirmedBatchesRequest, context) -> pb.CountConfirmedBatchesResponse:
        arguments = _arguments("category", request.category, request)
        return pb.CountConfirmedBatchesResponse(count=await self._count(CONFIRMED_BATCHES, arguments))
