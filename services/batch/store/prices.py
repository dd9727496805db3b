"""Price snapshots: each active supplier's price per category, captured over time."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch.records import PriceSnapshot
from services.batch.store.schema import fetch_all


async def latest_snapshot_prices(conn: AsyncConnection) -> dict[tuple[str, str], Decimal]:
    """{(supplier id, category): the unit price of its latest snapshot}."""
    rows = await fetch_all(
        conn,
        """
        SELECT DISTINCT ON (supplier_id, category) supplier_id, category, unit_price
        FROM batch.price_snapshots ORDER BY supplier_id, category, capture_time DESC, id DESC
        """,
    )
    return {(str(r["supplier_id"]), r["category"]): r["unit_price"] for r in rows}


async def insert_snapshots(conn: AsyncConnection, snapshots: list[PriceSnapshot]) -> None:
    if snapshots:
        await conn.execute(
            text(
                "INSERT INTO batch.price_snapshots (capture_time, supplier_id, category, unit_price, change_percent, "
                "market_change) VALUES (:capture_time, :supplier_id, :category, :unit_price, :change_percent, "
                ":market_change)"
            ),
            [
                {
                    "capture_time": s.capture_time, "supplier_id": s.supplier_id, "category": s.category,
                    "unit_price": s.unit_price, "change_percent": s.change_percent, "market_change": s.market_change,
                }
                for s in snapshots
            ],
        )


async def price_history(conn: AsyncConnection, category: str, since: datetime) -> list[PriceSnapshot]:
    rows = await fetch_all(
        conn,
        "SELECT * FROM batch.price_snapshots WHERE category = :category AND capture_time >= :since "
        "ORDER BY capture_time, supplier_id",
        category=category,
        since=since,
    )
    return [
        PriceSnapshot(
            r["capture_time"], str(r["supplier_id"]), r["category"], r["unit_price"], r["change_percent"],
            r["market_change"],
        )
        for r in rows
    ]
