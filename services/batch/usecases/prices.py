"""Price snapshots and the trend built from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch import domain
from services.batch.records import PriceSnapshot
from services.batch.store import prices, suppliers


async def capture_price_snapshot(
    conn: AsyncConnection, captured: datetime, market_change_percent: Decimal
) -> list[PriceSnapshot]:
    """Records every active supplier's price (its tier at its MOQ) per category it serves,
    with the change since its previous snapshot; the snapshots recorded."""
    previous = await prices.latest_snapshot_prices(conn)
    snapshots = []
    for supplier in await suppliers.active_suppliers(conn):
        price = domain.tier_price(supplier.price_tiers, supplier.moq)
        if price is None:
            continue
        for category in supplier.categories:
            change, market = domain.price_change(
                previous.get((supplier.supplier_id, category)), price, market_change_percent
            )
            snapshots.append(PriceSnapshot(captured, supplier.supplier_id, category, price, change, market))
    await prices.insert_snapshots(conn, snapshots)
    return snapshots


@dataclass(frozen=True, slots=True)
class AveragePrice:
    capture_time: datetime
    unit_price: Decimal
    change_percent: Decimal | None
    market_change: bool


def average_prices(snapshots: list[PriceSnapshot], market_change_percent: Decimal) -> list[AveragePrice]:
    """The mean price of each capture, oldest first, with its change against the previous mean."""
    by_time: dict[datetime, list[Decimal]] = {}
    for snapshot in snapshots:
        by_time.setdefault(snapshot.capture_time, []).append(snapshot.unit_price)
    averages, previous = [], None
    for captured in sorted(by_time):
        captured_prices = by_time[captured]
        mean = (sum(captured_prices, Decimal(0)) / len(captured_prices)).quantize(domain.PRICE_QUANTUM)
        change, market = domain.price_change(previous, mean, market_change_percent)
        averages.append(AveragePrice(captured, mean, change, market))
        previous = mean
    return averages
