"""Windowed facts the rules service asks for: interactions with a product since a time.

A mixin of the tracking servicer (it reads `self._engine`), kept apart from the
servicer's own areas; one count on the (product_id, occurred_at) index.
"""

from __future__ import annotations

from datetime import UTC

from loom.tracking.v1 import tracking_pb2 as pb
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import run_in_transaction
from libs.errors import Violations

PRODUCT_INTERACTIONS = text("SELECT count(*) FROM tracking.interactions WHERE product_id = :product AND occurred_at >= :since")


class WindowedFacts:
    _engine: AsyncEngine

    async def CountProductInteractions(
        self, request: pb.CountProductInteractionsRequest, context
    ) -> pb.CountProductInteractionsResponse:
        violations = Violations()
        violations.check(bool(request.product_id), "product_id", "required")
        violations.check(request.HasField("start_time"), "start_time", "required")
        violations.raise_if_any()
        arguments = {"product": request.product_id, "since": request.start_time.ToDatetime(tzinfo=UTC)}

        async def count(conn) -> int:
            return (await conn.execute(PRODUCT_INTERACTIONS, arguments)).scalar_one()

        return pb.CountProductInteractionsResponse(count=await run_in_transaction(self._engine, count))
