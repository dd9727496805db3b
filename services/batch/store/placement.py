"""PlaceOrder's statements: the open batches of categories, joining one, opening one, and
placing a group's orders with one statement. The choices between them are made by
`services.batch.usecases.placement`; every statement here re-checks what it relies on
under the batch's row lock, so a stale choice costs a retry, never an overfull batch.

These run on the PlaceOrder hot path and go to psycopg directly (see combiner.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch import domain
from services.batch.combiner import driver_connection
from services.batch.records import Batch
from services.batch.store.batches import batch_record
from services.batch.store.schema import fetch_one


async def open_batches(conn: AsyncConnection, categories: Sequence[str], now: datetime) -> dict[str, list[domain.OpenBatch]]:
    """The open batches of each category (one statement for them all), oldest first."""
    cursor = driver_connection(conn).cursor(row_factory=dict_row)
    await cursor.execute(
        """
        SELECT b.* FROM unnest(%(categories)b::text[]) AS c(category) CROSS JOIN LATERAL (
            SELECT * FROM batch.batches
            WHERE status = 'filling' AND category = c.category AND window_close_time > %(now)s
            ORDER BY create_time LIMIT 50
        ) b
        """,
        {"categories": list(categories), "now": now},
    )
    found: dict[str, list[domain.OpenBatch]] = {category: [] for category in categories}
    for row in await cursor.fetchall():
        found[row["category"]].append(batch_record(row).as_open)
    return found


# The batch row is re-checked under its row lock (READ COMMITTED re-evaluates the WHERE on
# the latest version), so a batch can never be pushed past its capacity or style limit.
JOIN_BATCH = """
WITH b AS (
    UPDATE batch.batches
    SET current_quantity = current_quantity + %(quantity)s, style_count = style_count + %(style_count)s,
        order_count = order_count + 1, update_time = %(now)s
    WHERE id = %(batch_id)s AND status = 'filling' AND window_close_time > %(now)s
      AND current_quantity + %(quantity)s <= capacity AND style_count + %(style_count)s <= style_limit
    RETURNING *
), o AS (
    INSERT INTO batch.orders (id, buyer_id, category, quantity, style, status, batch_id, supplier_id, currency,
                              supplier_unit_price, margin_percent, unit_price, subtotal, margin_amount, total,
                              create_time, update_time)
    SELECT %(order_id)s, %(buyer_id)s, b.category, %(quantity)s, %(style)s::jsonb, 'placed', b.id, b.supplier_id,
           %(currency)s, %(supplier_unit_price)s, %(margin_percent)s, %(unit_price)s, %(subtotal)s, %(margin_amount)s,
           %(total)s, %(now)s, %(now)s
    FROM b RETURNING *
), c AS (
    INSERT INTO batch.contributions (id, batch_id, order_id, quantity, style_count, amount, create_time)
    SELECT %(contribution_id)s, o.batch_id, o.id, o.quantity, %(style_count)s, o.subtotal, %(now)s FROM o RETURNING id
), e AS (
    INSERT INTO batch.outbox (type, occurred_time, data)
    SELECT 'order.placed', %(now)s,
           json_build_object('order', batch.order_json(o::batch.orders), 'batch', batch.batch_json(b::batch.batches))
    FROM o, b
)
SELECT b.* FROM b, c
"""


async def join_batch(
    conn: AsyncConnection, batch_id: str, order: domain.OrderRequest, style: str, price: domain.Price,
    order_id: str, contribution_id: str, now: datetime,
) -> Batch | None:
    """Creates the order and its contribution on the batch; the batch after the join, or
    None when the batch can no longer take the order (nothing was written)."""
    cursor = driver_connection(conn).cursor(row_factory=dict_row)
    await cursor.execute(
        JOIN_BATCH,
        {
            "batch_id": batch_id,
            "quantity": order.quantity,
            "style_count": order.style_count,
            "order_id": order_id,
            "contribution_id": contribution_id,
            "buyer_id": order.buyer_id,
            "style": style,
            "currency": price.currency,
            "supplier_unit_price": price.supplier_unit_price,
            "margin_percent": price.margin_percent,
            "unit_price": price.unit_price,
            "subtotal": price.subtotal,
            "margin_amount": price.margin_amount,
            "total": price.total,
            "now": now,
        },
    )
    row = await cursor.fetchone()
    return None if row is None else batch_record(row)


async def start_batch(
    conn: AsyncConnection, supplier: domain.SupplierTerms, category: str, window: timedelta, now: datetime
) -> domain.OpenBatch:
    """Opens a batch of the category with the supplier (target: its MOQ), with its batch.opened event."""
    unit_price = domain.tier_price(supplier.price_tiers, supplier.moq)
    assert unit_price is not None  # can_take checked it
    row = await fetch_one(
        conn,
        """
        WITH b AS (
            INSERT INTO batch.batches (id, category, supplier_id, status, target_quantity, capacity, style_limit,
                                       window_open_time, window_close_time, unit_price, create_time, update_time)
            VALUES (:id, :category, :supplier_id, 'filling', :target, :capacity, :style_limit, :now, :closes,
                    :unit_price, :now, :now)
            RETURNING *
        ), f AS (
            INSERT INTO batch.filling_batches (id) SELECT id FROM b
        ), e AS (
            INSERT INTO batch.outbox (type, occurred_time, data)
            SELECT 'batch.opened', :now,
                   json_build_object('batch', batch.batch_json(b::batch.batches), 'supplier', batch.supplier_json(s))
            FROM b JOIN batch.suppliers s ON s.id = b.supplier_id
        )
        SELECT * FROM b
        """,
        id=str(uuid.uuid4()),
        category=category,
        supplier_id=supplier.supplier_id,
        target=supplier.moq,
        capacity=supplier.capacity,
        style_limit=supplier.max_styles_per_batch,
        now=now,
        closes=now + window,
        unit_price=unit_price,
    )
    assert row is not None
    return batch_record(row).as_open


# Many orders at once, each on the batch chosen for it beforehand. Each batch is checked and
# updated once for all its orders (the sums fit only if every order's step fits: they only
# grow), and each order sees the batch as it was right after its own join, as if placed alone.
# The batches are locked first, found by key alone (t), and checked as locked (the latest
# version, as an UPDATE's re-check would see): the planner cannot see how few rows
# jsonb_to_recordset yields, and given the checks on the update's own scan it went through
# a partial index of every filling batch, dead versions included, slower with every order.
PLACE_MANY = """
WITH i AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(orders)s::jsonb) AS i(
        n int, batch_id uuid, order_id uuid, contribution_id uuid, buyer_id text, quantity bigint, style_count int,
        style jsonb, currency text, supplier_unit_price numeric, margin_percent numeric, unit_price numeric,
        subtotal numeric, margin_amount numeric, total numeric)
), w AS (
    SELECT batch_id, sum(quantity) AS quantity, sum(style_count) AS style_count, count(*) AS orders
    FROM i GROUP BY batch_id
), t AS MATERIALIZED (
    SELECT * FROM batch.batches WHERE id = ANY(%(batch_ids)s::uuid[]) FOR NO KEY UPDATE
), b AS (
    UPDATE batch.batches u
    SET current_quantity = u.current_quantity + w.quantity, style_count = u.style_count + w.style_count,
        order_count = u.order_count + w.orders, update_time = %(now)s
    FROM t JOIN w ON w.batch_id = t.id
    WHERE u.id = t.id AND t.status = 'filling' AND t.window_close_time > %(now)s
      AND t.current_quantity + w.quantity <= t.capacity AND t.style_count + w.style_count <= t.style_limit
    RETURNING u AS batch, w.quantity, w.style_count, w.orders
), j AS (
    SELECT i.*, jsonb_populate_record(b.batch, jsonb_build_object(
               'current_quantity', (b.batch).current_quantity - b.quantity + sum(i.quantity) OVER placed,
               'style_count', (b.batch).style_count - b.style_count + sum(i.style_count) OVER placed,
               'order_count', (b.batch).order_count - b.orders + row_number() OVER placed)) AS batch
    FROM i JOIN b ON (b.batch).id = i.batch_id
    WINDOW placed AS (PARTITION BY i.batch_id ORDER BY i.n)
), o AS (
    INSERT INTO batch.orders (id, buyer_id, category, quantity, style, status, batch_id, supplier_id, currency,
                              supplier_unit_price, margin_percent, unit_price, subtotal, margin_amount, total,
                              create_time, update_time)
    SELECT order_id, buyer_id, (batch).category, quantity, style, 'placed', batch_id, (batch).supplier_id, currency,
           supplier_unit_price, margin_percent, unit_price, subtotal, margin_amount, total, %(now)s, %(now)s
    FROM j ORDER BY n
    RETURNING *
), c AS (
    INSERT INTO batch.contributions (id, batch_id, order_id, quantity, style_count, amount, create_time)
    SELECT j.contribution_id, o.batch_id, o.id, o.quantity, j.style_count, o.subtotal, %(now)s
    FROM o JOIN j ON j.order_id = o.id ORDER BY j.n
), e AS (
    INSERT INTO batch.outbox (type, occurred_time, data)
    SELECT 'order.placed', %(now)s,
           json_build_object('order', batch.order_json(o::batch.orders), 'batch', batch.batch_json(j.batch))
    FROM o JOIN j ON j.order_id = o.id ORDER BY j.n
)
SELECT j.n, (j.batch).* FROM j ORDER BY j.n
"""


def planned_order(
    n: int, batch_id: str, order: domain.OrderRequest, style: dict, price: domain.Price, order_id: str,
    contribution_id: str,
) -> dict[str, Any]:
    """One order of place_many: the n-th of its group, on batch_id."""
    return {
        "n": n, "batch_id": batch_id, "order_id": order_id, "contribution_id": contribution_id,
        "buyer_id": order.buyer_id, "quantity": order.quantity, "style_count": order.style_count, "style": style,
        "currency": price.currency, "supplier_unit_price": str(price.supplier_unit_price),
        "margin_percent": str(price.margin_percent), "unit_price": str(price.unit_price),
        "subtotal": str(price.subtotal), "margin_amount": str(price.margin_amount), "total": str(price.total),
    }


async def place_many(conn: AsyncConnection, planned: list[dict[str, Any]], now: datetime) -> list[tuple[int, Batch]]:
    """Places the planned orders whose batch can still take its share of them (an all-or-nothing
    check per batch); (n, the batch right after that order's join) for each order placed."""
    cursor = driver_connection(conn).cursor(row_factory=dict_row)
    batch_ids = sorted({row["batch_id"] for row in planned})
    await cursor.execute(PLACE_MANY, {"orders": json.dumps(planned), "batch_ids": batch_ids, "now": now})
    return [(row.pop("n"), batch_record(row)) for row in await cursor.fetchall()]
