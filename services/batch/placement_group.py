"""PlaceOrder's work in a group commit (combiner.GroupCommitter): the group's orders with
one statement where they can be (usecases.placement.place_orders), the rest one by one
(usecases.placement.place_order), each answered as PlaceOrder answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch import metrics
from services.batch.messages import OrderItem, PlacedAnswers
from services.batch.settings import BatchSettings
from services.batch.usecases.placement import place_order, place_orders

SEEN_BATCHES = "open_batches"  # the key, in the group commit's shared dict, of placement's SeenBatches


class OrderPlacement:
    """combiner.GroupWork for PlaceOrder."""

    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings

    async def together(self, conn: AsyncConnection, shared: dict, items: list[OrderItem]) -> list[Message | None]:
        placed = await place_orders(
            conn, [(item.order, item.style_json) for item in items],
            margin_percent=self._settings.margin_percent,
            currency=self._settings.currency,
            now=datetime.now(UTC),
            seen=shared.setdefault(SEEN_BATCHES, {}),
        )
        answer = PlacedAnswers()
        return [None if p is None else answer(item, p) for item, p in zip(items, placed, strict=True)]

    async def alone(self, conn: AsyncConnection, shared: dict, item: OrderItem) -> Message:
        placed = await place_order(
            conn, item.order, item.style_json,
            margin_percent=self._settings.margin_percent,
            currency=self._settings.currency,
            window=timedelta(days=self._settings.batch_window_days),
            now=datetime.now(UTC),
            seen=shared.setdefault(SEEN_BATCHES, {}),
        )
        return PlacedAnswers()(item, placed)

    def committed(self, items: list[OrderItem]) -> None:
        metrics.ORDERS_PLACED.inc(len(items))
