"""The batch schema's tables and every query on them.

Functions take an open connection (the caller owns the transaction) and
return plain rows. Every state change writes its outbox events in the same
statement or transaction, using the SQL functions batch.*_json so an event
has one shape whether one row or a million changed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import MetaData, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db import tune_for_bulk
from libs.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from libs.idempotency import idempotency_table
from services.batch import domain
from services.batch.combiner import driver_connection
from services.batch.domain import BatchStatus, OrderStatus

METADATA = MetaData(schema="batch")
IDEMPOTENCY = idempotency_table(METADATA)
ORCHESTRATE_LOCK = "batch.orchestrate"
OUTBOX_LOCK = "batch.outbox"
PLACE_ATTEMPTS = 20
SEEN_CATEGORIES = 10_000  # at most 50 batches each: a few MB at most


def parse_uuid(field: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument.field(field, "must be a UUID") from None


async def _one(conn: AsyncConnection, sql: str, **params: Any) -> RowMapping | None:
    return (await conn.execute(text(sql), params)).mappings().first()


async def _all(conn: AsyncConnection, sql: str, **params: Any) -> list[RowMapping]:
    return list((await conn.execute(text(sql), params)).mappings().all())


# ---------------------------------------------------------------- suppliers


def tiers_json(tiers: Sequence[domain.PriceTier]) -> str:
    ordered = sorted(tiers, key=lambda t: t.min_quantity)
    return json.dumps([{"min_quantity": t.min_quantity, "unit_price": str(t.unit_price)} for t in ordered])


def supplier_terms(row: RowMapping) -> domain.SupplierTerms:
    return domain.SupplierTerms(
        supplier_id=str(row["id"]),
        categories=tuple(row["categories"]),
        moq=row["moq"],
        capacity=row["capacity"],
        price_tiers=tuple(domain.PriceTier(t["min_quantity"], Decimal(t["unit_price"])) for t in row["price_tiers"]),
        lead_time_days=row["lead_time_days"],
        rating=row["rating"],
        active=row["active"],
        max_styles_per_batch=row["max_styles_per_batch"],
    )


async def save_supplier(
    conn: AsyncConnection, terms: domain.SupplierTerms, name: str, contact_email: str, now: datetime
) -> RowMapping:
    """Inserts the supplier, or replaces every field of an existing one."""
    row = await _one(
        conn,
        """
        INSERT INTO batch.suppliers AS s (id, name, categories, moq, capacity, price_tiers, lead_time_days, rating,
                                          active, max_styles_per_batch, contact_email, create_time, update_time)
        VALUES (:id, :name, :categories, :moq, :capacity, CAST(:tiers AS jsonb), :lead_time_days, :rating,
                :active, :max_styles, :email, :now, :now)
        ON CONFLICT (id) DO UPDATE SET name = excluded.name, categories = excluded.categories, moq = excluded.moq,
            capacity = excluded.capacity, price_tiers = excluded.price_tiers,
            lead_time_days = excluded.lead_time_days, rating = excluded.rating, active = excluded.active,
            max_styles_per_batch = excluded.max_styles_per_batch, contact_email = excluded.contact_email,
            update_time = excluded.update_time
        RETURNING *
        """,
        id=terms.supplier_id,
        name=name,
        categories=list(terms.categories),
        moq=terms.moq,
        capacity=terms.capacity,
        tiers=tiers_json(terms.price_tiers),
        lead_time_days=terms.lead_time_days,
        rating=terms.rating,
        active=terms.active,
        max_styles=terms.max_styles_per_batch,
        email=contact_email,
        now=now,
    )
    assert row is not None
    return row


async def get_supplier(conn: AsyncConnection, supplier_id: str, *, for_update: bool = False) -> RowMapping:
    row = await _one(
        conn,
        "SELECT * FROM batch.suppliers WHERE id = :id" + (" FOR UPDATE" if for_update else ""),
        id=parse_uuid("supplier_id", supplier_id),
    )
    if row is None:
        raise NotFound("supplier", supplier_id)
    return row


async def list_suppliers(
    conn: AsyncConnection, category: str, active_only: bool, after: list | None, limit: int
) -> list[RowMapping]:
    return await _all(
        conn,
        """
        SELECT * FROM batch.suppliers
        WHERE (:category = '' OR categories @> ARRAY[CAST(:category AS text)])
          AND (NOT :active_only OR active)
          AND (CAST(:after_time AS timestamptz) IS NULL OR (create_time, id) > (:after_time, CAST(:after_id AS uuid)))
        ORDER BY create_time, id LIMIT :limit
        """,
        category=category,
        active_only=active_only,
        after_time=after[0] if after else None,
        after_id=after[1] if after else None,
        limit=limit,
    )


async def suppliers_serving(conn: AsyncConnection, category: str) -> list[domain.SupplierTerms]:
    rows = await _all(conn, "SELECT * FROM batch.suppliers WHERE categories @> ARRAY[CAST(:c AS text)]", c=category)
    return [supplier_terms(r) for r in rows]


async def recommend_supplier(
    conn: AsyncConnection, category: str, quantity: int, style_count: int = 1
) -> domain.SupplierTerms:
    """The supplier a new batch would go to; NOT_FOUND / FAILED_PRECONDITION when none can."""
    serving = await suppliers_serving(conn, category)
    if not serving:
        raise InvalidArgument.field("category", f"unknown category {category!r}: no supplier serves it")
    chosen = domain.choose_supplier(serving, category, quantity, style_count)
    if chosen is None:
        raise FailedPrecondition(
            f"no active supplier of {category!r} can take {quantity} units in {style_count} styles",
            reason="NO_SUPPLIER",
            subject=f"category/{category}",
        )
    return chosen


# ---------------------------------------------------------------- placing orders


@dataclass(frozen=True)
class PlacedOrder:
    order_id: str
    contribution_id: str
    batch: Mapping[str, Any]
    price: domain.Price
    batch_opened: bool
    now: datetime


def _open_batch(row: Mapping[str, Any]) -> domain.OpenBatch:
    return domain.OpenBatch(
        batch_id=str(row["id"]),
        current_quantity=row["current_quantity"],
        target_quantity=row["target_quantity"],
        capacity=row["capacity"],
        style_count=row["style_count"],
        style_limit=row["style_limit"],
        window_close_time=row["window_close_time"],
        create_time=row["create_time"],
        unit_price=row["unit_price"],
    )


async def _open_batches(conn: AsyncConnection, categories: Sequence[str], now: datetime) -> dict[str, list[domain.OpenBatch]]:
    """The open batches of each category (one statement for them all), oldest first."""
    cursor = driver_connection(conn).cursor(row_factory=dict_row)
    await cursor.execute(
        """
        SELECT b.* FROM unnest(%(categories)b::text[]) AS c(category) CROSS JOIN LATERAL (
            SELECT id, category, current_quantity, target_quantity, capacity, style_count, style_limit,
                   window_close_time, create_time, unit_price
            FROM batch.batches
            WHERE status = 'filling' AND category = c.category AND window_close_time > %(now)s
            ORDER BY create_time LIMIT 50
        ) b
        """,
        {"categories": list(categories), "now": now},
    )
    found: dict[str, list[domain.OpenBatch]] = {category: [] for category in categories}
    for row in await cursor.fetchall():
        found[row["category"]].append(_open_batch(row))
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


async def _join(
    conn: AsyncConnection, batch_id: str, order: domain.OrderRequest, style: str, price: domain.Price,
    order_id: str, contribution_id: str, now: datetime,
) -> Mapping[str, Any] | None:
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
    return await cursor.fetchone()


async def _start_batch(
    conn: AsyncConnection, supplier: domain.SupplierTerms, category: str, window: timedelta, now: datetime
) -> domain.OpenBatch:
    unit_price = domain.tier_price(supplier.price_tiers, supplier.moq)
    assert unit_price is not None  # can_take checked it
    row = await _one(
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
    return _open_batch(row)


async def place_order(
    conn: AsyncConnection,
    order: domain.OrderRequest,
    style: dict,
    *,
    margin_percent: Decimal,
    currency: str,
    window: timedelta,
    now: datetime,
    seen: dict[str, list[domain.OpenBatch]] | None = None,
) -> PlacedOrder:
    """Joins the best compatible batch, or opens one with the best supplier, in the caller's
    transaction. Losing a race for a batch's last units just means looking again.

    `seen` (shared by the orders of one group, and of the groups after it while they commit)
    remembers each category's open batches as they were last seen or left, sparing a look per
    order. A stale view costs at most a retry: the join re-checks the batch under its row
    lock, and nothing is opened without a fresh look under the category's opener lock."""
    order_id, contribution_id = str(uuid.uuid4()), str(uuid.uuid4())
    style_json = json.dumps(style)
    opened = False
    remembered = seen.pop(order.category, None) if seen is not None else None
    for _ in range(PLACE_ATTEMPTS):
        candidates = remembered if remembered is not None else (await _open_batches(conn, [order.category], now))[order.category]
        remembered = None
        chosen = domain.choose_batch(candidates, order.quantity, order.style_count, now)
        if chosen is None:
            # One opener per category at a time, so racing orders share the new batch.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"open:{order.category}"})
            candidates = (await _open_batches(conn, [order.category], now))[order.category]
            chosen = domain.choose_batch(candidates, order.quantity, order.style_count, now)
            if chosen is None:
                supplier = await recommend_supplier(conn, order.category, order.quantity, order.style_count)
                chosen = await _start_batch(conn, supplier, order.category, window, now)
                candidates = [*candidates, chosen]
                opened = True
        price = domain.price_order(chosen.unit_price, margin_percent, order.quantity, currency)
        joined = await _join(conn, chosen.batch_id, order, style_json, price, order_id, contribution_id, now)
        if joined is not None:
            if seen is not None:
                seen[order.category] = [_open_batch(joined) if b is chosen else b for b in candidates]
            return PlacedOrder(order_id, contribution_id, joined, price, opened, now)
    raise Unavailable("the category's batches are changing too fast; retry the same request_id")


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


async def place_orders(
    conn: AsyncConnection,
    orders: Sequence[tuple[domain.OrderRequest, dict]],
    *,
    margin_percent: Decimal,
    currency: str,
    now: datetime,
    seen: dict[str, list[domain.OpenBatch]],
) -> list[PlacedOrder | None]:
    """Places what it can of a group's (order, style) pairs with one statement, in the caller's
    transaction, each on the batch place_order would choose for it in this sequence; None
    for an order to hand to place_order: no open batch fits it (or an earlier order of its
    category), or its batch changed since it was looked at and can no longer take its share.

    `seen` is place_order's: looked at once for the categories not in it yet, and left as
    this transaction leaves the batches (a category whose batch refused its share is dropped,
    so it is looked at afresh)."""
    if len(seen) > SEEN_CATEGORIES:
        seen.clear()
    unseen = list({order.category for order, _ in orders if order.category not in seen})
    if unseen:
        seen.update(await _open_batches(conn, unseen, now))
    planned: dict[int, tuple[domain.OrderRequest, str, str, domain.Price]] = {}
    rows: list[dict[str, Any]] = []
    alone: set[str] = set()  # categories where an order needs place_order: the later ones follow it
    for n, (order, style) in enumerate(orders):
        candidates = seen[order.category] if order.category not in alone else []
        chosen = domain.choose_batch(candidates, order.quantity, order.style_count, now)
        if chosen is None:
            alone.add(order.category)
            continue
        seen[order.category] = [
            replace(b, current_quantity=b.current_quantity + order.quantity, style_count=b.style_count + order.style_count)
            if b is chosen else b
            for b in candidates
        ]
        price = domain.price_order(chosen.unit_price, margin_percent, order.quantity, currency)
        order_id, contribution_id = str(uuid.uuid4()), str(uuid.uuid4())
        planned[n] = (order, order_id, contribution_id, price)
        rows.append({
            "n": n, "batch_id": chosen.batch_id, "order_id": order_id, "contribution_id": contribution_id,
            "buyer_id": order.buyer_id, "quantity": order.quantity, "style_count": order.style_count, "style": style,
            "currency": price.currency, "supplier_unit_price": str(price.supplier_unit_price),
            "margin_percent": str(price.margin_percent), "unit_price": str(price.unit_price),
            "subtotal": str(price.subtotal), "margin_amount": str(price.margin_amount), "total": str(price.total),
        })
    placed: list[PlacedOrder | None] = [None] * len(orders)
    if not rows:
        return placed
    cursor = driver_connection(conn).cursor(row_factory=dict_row)
    batch_ids = sorted({row["batch_id"] for row in rows})
    await cursor.execute(PLACE_MANY, {"orders": json.dumps(rows), "batch_ids": batch_ids, "now": now})
    left: dict[str, domain.OpenBatch] = {}  # each batch as the statement left it
    for row in await cursor.fetchall():
        n = row.pop("n")
        _, order_id, contribution_id, price = planned[n]
        placed[n] = PlacedOrder(order_id, contribution_id, row, price, False, now)
        left[str(row["id"])] = _open_batch(row)
    refused = {order.category for n, (order, *_) in planned.items() if placed[n] is None}
    for category in {order.category for order, *_ in planned.values()}:
        if category in refused:
            seen.pop(category, None)
        elif category in seen:
            seen[category] = [left.get(b.batch_id, b) for b in seen[category]]
    return placed


# ---------------------------------------------------------------- orders


async def get_order(conn: AsyncConnection, order_id: str, *, for_update: bool = False) -> RowMapping:
    row = await _one(
        conn,
        "SELECT * FROM batch.orders WHERE id = :id" + (" FOR UPDATE" if for_update else ""),
        id=parse_uuid("order_id", order_id),
    )
    if row is None:
        raise NotFound("order", order_id)
    return row


async def list_orders(
    conn: AsyncConnection, buyer_id: str, status: str, batch_id: str, after: list | None, limit: int
) -> list[RowMapping]:
    return await _all(
        conn,
        """
        SELECT * FROM batch.orders
        WHERE (:buyer_id = '' OR buyer_id = :buyer_id) AND (:status = '' OR status = :status)
          AND (CAST(:batch_id AS uuid) IS NULL OR batch_id = CAST(:batch_id AS uuid))
          AND (CAST(:after_time AS timestamptz) IS NULL OR (create_time, id) < (:after_time, CAST(:after_id AS uuid)))
        ORDER BY create_time DESC, id DESC LIMIT :limit
        """,
        buyer_id=buyer_id,
        status=status,
        batch_id=parse_uuid("batch_id", batch_id) if batch_id else None,
        after_time=after[0] if after else None,
        after_id=after[1] if after else None,
        limit=limit,
    )


async def _order_event(conn: AsyncConnection, event_type: str, order_id: str, now: datetime, **extra: str) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO batch.outbox (type, occurred_time, data)
            SELECT :type, :now, CAST(jsonb_build_object('order', batch.order_json(o), 'batch', batch.batch_json(b))
                                     || CAST(:extra AS jsonb) AS json)
            FROM batch.orders o JOIN batch.batches b ON b.id = o.batch_id WHERE o.id = :id
            """
        ),
        {"type": event_type, "now": now, "id": order_id, "extra": json.dumps(extra)},
    )


async def cancel_order(conn: AsyncConnection, order: RowMapping, reason: str, now: datetime) -> RowMapping:
    """Cancels an order whose batch still fills, giving its quantity and styles back."""
    status = OrderStatus(order["status"])
    if not domain.order_transition_allowed(status, OrderStatus.CANCELLED):
        raise FailedPrecondition(
            f"an order that is {status} cannot be cancelled", reason="BAD_TRANSITION", subject=f"orders/{order['id']}"
        )
    released = await _one(
        conn,
        """
        WITH c AS (DELETE FROM batch.contributions WHERE order_id = :order_id RETURNING batch_id, quantity, style_count)
        UPDATE batch.batches b
        SET current_quantity = b.current_quantity - c.quantity, style_count = b.style_count - c.style_count,
            order_count = b.order_count - 1, update_time = :now
        FROM c WHERE b.id = c.batch_id AND b.status = 'filling'
        RETURNING b.id
        """,
        order_id=order["id"],
        now=now,
    )
    if released is None:
        # Rolls the contribution's deletion back with the transaction.
        raise FailedPrecondition(
            "the order's batch is no longer filling", reason="BATCH_NOT_FILLING", subject=f"orders/{order['id']}"
        )
    await _set_order_status(conn, str(order["id"]), OrderStatus.CANCELLED, reason, now)
    await _order_event(conn, "order.cancelled", str(order["id"]), now, reason=reason)
    return await get_order(conn, str(order["id"]))


async def _set_order_status(conn: AsyncConnection, order_id: str, status: OrderStatus, reason: str, now: datetime) -> None:
    await conn.execute(
        text("UPDATE batch.orders SET status = :status, status_reason = :reason, update_time = :now WHERE id = :id"),
        {"status": status.value, "reason": reason, "now": now, "id": order_id},
    )


async def update_order_status(
    conn: AsyncConnection, order_id: str, target: OrderStatus, reason: str, now: datetime
) -> RowMapping:
    order = await get_order(conn, order_id, for_update=True)
    if target == OrderStatus.CANCELLED:
        return await cancel_order(conn, order, reason, now)
    current = OrderStatus(order["status"])
    if not domain.order_transition_allowed(current, target):
        raise FailedPrecondition(
            f"an order cannot go from {current} to {target}", reason="BAD_TRANSITION", subject=f"orders/{order_id}"
        )
    await _set_order_status(conn, str(order["id"]), target, reason, now)
    await _order_event(conn, "order.status_changed", str(order["id"]), now, previous_status=current.value, reason=reason)
    return await get_order(conn, order_id)


def _check_priority(row: RowMapping, priority: int, subject: str) -> None:
    if priority < row["assignment_priority"]:
        raise FailedPrecondition(
            f"a supplier was assigned with priority {row['assignment_priority']}; {priority} does not override it",
            reason="LOWER_PRIORITY",
            subject=subject,
        )


async def _assignable_supplier(conn: AsyncConnection, supplier_id: str, category: str, quantity: int) -> RowMapping:
    supplier = await get_supplier(conn, supplier_id)
    terms = supplier_terms(supplier)
    if not (terms.active and category in terms.categories and quantity <= terms.capacity):
        raise FailedPrecondition(
            f"supplier {supplier_id} is inactive, does not serve {category!r} or cannot make {quantity} units",
            reason="SUPPLIER_UNFIT",
            subject=f"suppliers/{supplier_id}",
        )
    return supplier


ASSIGNABLE_ORDER_STATUSES = (*domain.OPEN_ORDER_STATUSES, OrderStatus.CONFIRMED)


async def assign_order_supplier(
    conn: AsyncConnection, order_id: str, supplier_id: str, priority: int, now: datetime
) -> RowMapping:
    order = await get_order(conn, order_id, for_update=True)
    if order["status"] not in ASSIGNABLE_ORDER_STATUSES:
        raise FailedPrecondition(
            f"an order that is {order['status']} cannot change supplier", reason="BAD_STATE", subject=f"orders/{order_id}"
        )
    _check_priority(order, priority, f"orders/{order_id}")
    await _assignable_supplier(conn, supplier_id, order["category"], order["quantity"])
    await conn.execute(
        text(
            """
            UPDATE batch.orders SET supplier_id = :supplier_id, assignment_priority = :priority, update_time = :now,
                status = CASE WHEN status = 'awaiting_supplier' THEN 'placed' ELSE status END
            WHERE id = :id
            """
        ),
        {"supplier_id": parse_uuid("supplier_id", supplier_id), "priority": priority, "now": now, "id": order["id"]},
    )
    await _order_event(conn, "order.supplier_assigned", str(order["id"]), now)
    return await get_order(conn, order_id)


async def assign_batch_supplier(
    conn: AsyncConnection, batch_id: str, supplier_id: str, priority: int, now: datetime
) -> RowMapping:
    batch = await get_batch(conn, batch_id, for_update=True)
    if batch["status"] not in (BatchStatus.FILLING, BatchStatus.CONFIRMED):
        raise FailedPrecondition(
            f"a batch that is {batch['status']} cannot change supplier", reason="BAD_STATE", subject=f"batches/{batch_id}"
        )
    await _assignable_supplier(conn, supplier_id, batch["category"], batch["current_quantity"])
    moved = await _all(
        conn,
        """
        WITH b AS (UPDATE batch.batches SET supplier_id = :supplier_id, update_time = :now WHERE id = :batch_id),
        o AS (
            UPDATE batch.orders SET supplier_id = :supplier_id, assignment_priority = :priority, update_time = :now,
                status = CASE WHEN status = 'awaiting_supplier' THEN 'placed' ELSE status END
            WHERE batch_id = :batch_id AND status IN ('placed', 'awaiting_supplier', 'confirmed')
              AND assignment_priority <= :priority
            RETURNING id
        )
        SELECT id FROM o
        """,
        supplier_id=parse_uuid("supplier_id", supplier_id),
        priority=priority,
        now=now,
        batch_id=batch["id"],
    )
    for row in moved:
        await _order_event(conn, "order.supplier_assigned", str(row["id"]), now)
    await _batch_event(conn, "batch.status_changed", str(batch["id"]), now, change="supplier_assigned")
    return await get_batch(conn, batch_id)


# ---------------------------------------------------------------- batches


async def get_batch(conn: AsyncConnection, batch_id: str, *, for_update: bool = False) -> RowMapping:
    row = await _one(
        conn,
        "SELECT * FROM batch.batches WHERE id = :id" + (" FOR UPDATE" if for_update else ""),
        id=parse_uuid("batch_id", batch_id),
    )
    if row is None:
        raise NotFound("batch", batch_id)
    return row


async def get_batches(conn: AsyncConnection, batch_ids: Sequence[str]) -> list[RowMapping]:
    return await _all(conn, "SELECT * FROM batch.batches WHERE id = ANY(CAST(:ids AS uuid[]))", ids=list(batch_ids))


async def list_batches(
    conn: AsyncConnection, status: str, category: str, supplier_id: str, needs_review: bool,
    after: list | None, limit: int,
) -> list[RowMapping]:
    return await _all(
        conn,
        """
        SELECT * FROM batch.batches
        WHERE (:status = '' OR status = :status) AND (:category = '' OR category = :category)
          AND (CAST(:supplier_id AS uuid) IS NULL OR supplier_id = CAST(:supplier_id AS uuid))
          AND (NOT :needs_review OR needs_review)
          AND (CAST(:after_time AS timestamptz) IS NULL OR (create_time, id) < (:after_time, CAST(:after_id AS uuid)))
        ORDER BY create_time DESC, id DESC LIMIT :limit
        """,
        status=status,
        category=category,
        supplier_id=parse_uuid("supplier_id", supplier_id) if supplier_id else None,
        needs_review=needs_review,
        after_time=after[0] if after else None,
        after_id=after[1] if after else None,
        limit=limit,
    )


async def _batch_event(conn: AsyncConnection, event_type: str, batch_id: str, now: datetime, **extra: str) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO batch.outbox (type, occurred_time, data)
            SELECT :type, :now, CAST(jsonb_build_object('batch', batch.batch_json(b), 'supplier', batch.supplier_json(s))
                                     || CAST(:extra AS jsonb) AS json)
            FROM batch.batches b JOIN batch.suppliers s ON s.id = b.supplier_id WHERE b.id = :id
            """
        ),
        {"type": event_type, "now": now, "id": batch_id, "extra": json.dumps(extra)},
    )


async def advance_batch(conn: AsyncConnection, batch_id: str, target: BatchStatus, now: datetime) -> RowMapping:
    """confirmed -> in_production -> completed; the batch's confirmed orders go into production with it."""
    batch = await get_batch(conn, batch_id, for_update=True)
    current = BatchStatus(batch["status"])
    if target not in (BatchStatus.IN_PRODUCTION, BatchStatus.COMPLETED) or not domain.batch_transition_allowed(
        current, target
    ):
        raise FailedPrecondition(
            f"a batch cannot go from {current} to {target}", reason="BAD_TRANSITION", subject=f"batches/{batch_id}"
        )
    await conn.execute(
        text("UPDATE batch.batches SET status = :status, update_time = :now WHERE id = :id"),
        {"status": target.value, "now": now, "id": batch["id"]},
    )
    if target == BatchStatus.IN_PRODUCTION:
        await conn.execute(
            text(
                """
                WITH o AS (
                    UPDATE batch.orders SET status = 'in_production', update_time = :now
                    WHERE batch_id = :id AND status = 'confirmed' RETURNING *
                )
                INSERT INTO batch.outbox (type, occurred_time, data)
                SELECT 'order.status_changed', :now,
                       json_build_object('order', batch.order_json(o::batch.orders), 'batch', batch.batch_json(b),
                                         'previous_status', 'confirmed')
                FROM o JOIN batch.batches b ON b.id = o.batch_id
                """
            ),
            {"now": now, "id": batch["id"]},
        )
    await _batch_event(conn, "batch.status_changed", str(batch["id"]), now, previous_status=current.value)
    return await get_batch(conn, batch_id)


# ---------------------------------------------------------------- orchestration (set-based)

# Each predicate selects filling batches over alias b; they are the SQL form of domain.decide.
REACHES_CONFIRM = "b.current_quantity * 100 >= b.target_quantity * :confirm"
UNDER_CONFIRM = f"b.status = 'filling' AND NOT ({REACHES_CONFIRM})"
PREDICATES = {
    domain.Action.CONFIRM: f"b.status = 'filling' AND {REACHES_CONFIRM}",
    domain.Action.FLAG_FOR_REVIEW: f"""{UNDER_CONFIRM} AND b.window_close_time <= :now AND NOT b.needs_review
        AND b.current_quantity * 100 >= b.target_quantity * :review""",
    domain.Action.CANCEL: f"""{UNDER_CONFIRM} AND b.window_close_time <= :now AND NOT b.needs_review
        AND b.current_quantity * 100 < b.target_quantity * :review""",
    domain.Action.NEARING_TARGET: f"""{UNDER_CONFIRM} AND b.window_close_time > :now AND NOT b.nearing_target_notified
        AND b.current_quantity * 100 >= b.target_quantity * :nearing""",
    domain.Action.CLOSING_SOON: f"""{UNDER_CONFIRM} AND b.window_close_time > :now
        AND b.window_close_time <= :closing_until AND NOT b.closing_soon_notified""",
}

# Flag-only actions: one statement sets the flag and writes the event from the updated rows.
FLAGS = {
    domain.Action.FLAG_FOR_REVIEW: ("needs_review", "batch.needs_review"),
    domain.Action.NEARING_TARGET: ("nearing_target_notified", "batch.nearing_target"),
    domain.Action.CLOSING_SOON: ("closing_soon_notified", "batch.closing_soon"),
}


@dataclass
class OrchestrationCounts:
    examined: int = 0
    confirmed: int = 0
    supplier_orders: int = 0
    nearing_target: int = 0
    closing_soon: int = 0
    flagged_for_review: int = 0
    cancelled: int = 0
    refunded: int = 0


def threshold_params(thresholds: domain.Thresholds, now: datetime) -> dict[str, Any]:
    return {
        "now": now,
        "confirm": thresholds.confirm_percent,
        "review": thresholds.review_percent,
        "nearing": thresholds.nearing_target_percent,
        "closing_until": now + thresholds.closing_soon,
    }


async def _mark(conn: AsyncConnection, action: str, set_sql: str, where: str, params: dict) -> int:
    """Changes the selected batches, which leave filling, and remembers them for this transaction's follow-up.

    The follow-up is a separate statement on purpose: its fresh snapshot sees every order
    committed before these batch rows were locked, and no order can join them afterwards."""
    await conn.execute(
        text("CREATE TEMP TABLE IF NOT EXISTS orchestrated (id uuid, action text) ON COMMIT DROP")
    )
    result = await conn.execute(
        text(
            f"""
            WITH u AS (
                UPDATE batch.batches b SET {set_sql}, update_time = :now FROM batch.filling_batches f
                WHERE f.id = b.id AND {where} RETURNING b.id
            ), left_filling AS (
                DELETE FROM batch.filling_batches f USING u WHERE f.id = u.id
            )
            INSERT INTO orchestrated (id, action) SELECT id, :action FROM u
            """
        ),
        {**params, "action": action},
    )
    # Fresh statistics, so the follow-up joins it by hash instead of looping over it.
    await conn.execute(text("ANALYZE orchestrated"))
    return result.rowcount


# The selected batches with their event shapes: each batch's JSON is built once (read
# by its own event and by every one of its orders' events) and each supplier's JSON once
# (MATERIALIZED, so it is not rebuilt for every joined row).
SELECTED = """
WITH c AS (
    SELECT b.*, batch.batch_json(b) AS batch_data FROM batch.batches b
    JOIN orchestrated t ON t.id = b.id AND t.action = :action
), s AS MATERIALIZED (
    SELECT s.id, batch.supplier_json(s) AS supplier_data FROM batch.suppliers s
    WHERE s.id IN (SELECT supplier_id FROM c)
)"""

CONFIRM_FOLLOW_UP = SELECTED + """, so AS (
    INSERT INTO batch.supplier_orders (order_number, batch_id, supplier_id, quantity, unit_price, total, create_time)
    SELECT supplier_order_number, id, supplier_id, current_quantity, unit_price,
           round(unit_price * current_quantity, 2), :now
    FROM c RETURNING batch_id
), moved AS (
    UPDATE batch.orders o SET status = 'confirmed', update_time = :now FROM c
    WHERE o.batch_id = c.id AND o.status IN ('placed', 'awaiting_supplier')
    RETURNING o.batch_id, batch.order_json(o) AS order_data
), batch_events AS (
    INSERT INTO batch.outbox (type, occurred_time, data)
    SELECT 'batch.confirmed', :now, json_build_object('batch', c.batch_data, 'supplier', s.supplier_data)
    FROM c JOIN s ON s.id = c.supplier_id
), order_events AS (
    INSERT INTO batch.outbox (type, occurred_time, data)
    SELECT 'order.status_changed', :now, json_build_object('order', m.order_data, 'batch', c.batch_data)
    FROM moved m JOIN c ON c.id = m.batch_id
)
SELECT (SELECT count(*) FROM so) AS supplier_orders
"""

CANCEL_FOLLOW_UP = SELECTED + """, refunded AS (
    UPDATE batch.orders o SET status = 'refunded', status_reason = :reason, update_time = :now FROM c
    WHERE o.batch_id = c.id AND o.status IN ('placed', 'awaiting_supplier')
    RETURNING o.id, o.batch_id, o.total, batch.order_json(o) AS order_data
), refunds AS (
    INSERT INTO batch.refunds (order_id, batch_id, amount, reason, create_time)
    SELECT id, batch_id, total, :reason, :now FROM refunded RETURNING order_id
), batch_events AS (
    INSERT INTO batch.outbox (type, occurred_time, data)
    SELECT 'batch.cancelled', :now, json_build_object('batch', c.batch_data, 'supplier', s.supplier_data,
                                                      'reason', :reason)
    FROM c JOIN s ON s.id = c.supplier_id
), order_events AS (
    INSERT INTO batch.outbox (type, occurred_time, data)
    SELECT 'order.refunded', :now, json_build_object('order', r.order_data, 'batch', c.batch_data, 'reason', :reason)
    FROM refunded r JOIN c ON c.id = r.batch_id
)
SELECT (SELECT count(*) FROM refunds) AS refunded
"""


async def confirm_batches(conn: AsyncConnection, where: str, params: dict) -> tuple[int, int]:
    """Confirms the selected batches: one supplier order each, their orders confirmed. (batches, supplier orders)"""
    confirmed = await _mark(
        conn,
        "confirm",
        "status = 'confirmed', needs_review = false, "
        "supplier_order_number = 'SO-' || lpad(nextval('batch.supplier_order_numbers')::text, 10, '0')",
        where,
        params,
    )
    if not confirmed:
        return 0, 0
    follow_up = {"now": params["now"], "action": "confirm"}
    supplier_orders = (await conn.execute(text(CONFIRM_FOLLOW_UP), follow_up)).scalar_one()
    return confirmed, supplier_orders


async def cancel_batches(conn: AsyncConnection, where: str, params: dict, reason: str) -> tuple[int, int]:
    """Cancels the selected batches and refunds every contributing order. (batches, orders refunded)"""
    cancelled = await _mark(conn, "cancel", "status = 'cancelled', needs_review = false", where, params)
    if not cancelled:
        return 0, 0
    follow_up = {"now": params["now"], "reason": reason, "action": "cancel"}
    refunded = (await conn.execute(text(CANCEL_FOLLOW_UP), follow_up)).scalar_one()
    return cancelled, refunded


async def _flag(conn: AsyncConnection, action: domain.Action, params: dict) -> int:
    column, event_type = FLAGS[action]
    result = await conn.execute(
        text(
            f"""
            WITH u AS (
                UPDATE batch.batches b SET {column} = true, update_time = :now FROM batch.filling_batches f
                WHERE f.id = b.id AND {PREDICATES[action]}
                RETURNING b.supplier_id, batch.batch_json(b) AS batch_data
            ), s AS MATERIALIZED (
                SELECT s.id, batch.supplier_json(s) AS supplier_data FROM batch.suppliers s
                WHERE s.id IN (SELECT supplier_id FROM u)
            )
            INSERT INTO batch.outbox (type, occurred_time, data)
            SELECT :event_type, :now, json_build_object('batch', u.batch_data, 'supplier', s.supplier_data)
            FROM u JOIN s ON s.id = u.supplier_id
            """
        ),
        {**params, "event_type": event_type},
    )
    return result.rowcount


async def orchestrate(conn: AsyncConnection, thresholds: domain.Thresholds, now: datetime) -> OrchestrationCounts:
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": ORCHESTRATE_LOCK})
    await tune_for_bulk(conn)
    params = threshold_params(thresholds, now)
    counts = OrchestrationCounts()
    counts.examined = (
        await conn.execute(text("SELECT count(*) FROM batch.filling_batches"))
    ).scalar_one()
    counts.confirmed, counts.supplier_orders = await confirm_batches(conn, PREDICATES[domain.Action.CONFIRM], params)
    counts.flagged_for_review = await _flag(conn, domain.Action.FLAG_FOR_REVIEW, params)
    counts.cancelled, counts.refunded = await cancel_batches(
        conn, PREDICATES[domain.Action.CANCEL], params, "window closed below the review threshold"
    )
    counts.nearing_target = await _flag(conn, domain.Action.NEARING_TARGET, params)
    counts.closing_soon = await _flag(conn, domain.Action.CLOSING_SOON, params)
    return counts


async def orchestrate_dry_run(conn: AsyncConnection, thresholds: domain.Thresholds, now: datetime) -> OrchestrationCounts:
    """The counts a real run would report now, changing nothing."""
    p = {a: PREDICATES[a] for a in domain.Action}
    row = await _one(
        conn,
        f"""
        SELECT count(*) AS examined,
               count(*) FILTER (WHERE {p[domain.Action.CONFIRM]}) AS confirmed,
               count(*) FILTER (WHERE {p[domain.Action.FLAG_FOR_REVIEW]}) AS flagged,
               count(*) FILTER (WHERE {p[domain.Action.CANCEL]}) AS cancelled,
               count(*) FILTER (WHERE {p[domain.Action.NEARING_TARGET]}) AS nearing,
               count(*) FILTER (WHERE {p[domain.Action.CLOSING_SOON]}) AS closing,
               (SELECT count(*) FROM batch.orders o JOIN batch.filling_batches f ON f.id = o.batch_id
                JOIN batch.batches b ON b.id = f.id WHERE {p[domain.Action.CANCEL]} AND o.status IN ('placed', 'awaiting_supplier')) AS refunded
        FROM batch.batches b JOIN batch.filling_batches f ON f.id = b.id WHERE b.status = 'filling'
        """,
        **threshold_params(thresholds, now),
    )
    assert row is not None
    return OrchestrationCounts(
        examined=row["examined"],
        confirmed=row["confirmed"],
        supplier_orders=row["confirmed"],
        nearing_target=row["nearing"],
        closing_soon=row["closing"],
        flagged_for_review=row["flagged"],
        cancelled=row["cancelled"],
        refunded=row["refunded"],
    )


async def resolve_review(conn: AsyncConnection, batch_id: str, confirm: bool, note: str, now: datetime) -> int:
    """Confirms or cancels one batch flagged for review; returns the orders refunded."""
    batch = await get_batch(conn, batch_id, for_update=True)
    if batch["status"] != BatchStatus.FILLING or not batch["needs_review"]:
        raise FailedPrecondition(
            "only a filling batch flagged for review can be resolved", reason="NOT_IN_REVIEW", subject=f"batches/{batch_id}"
        )
    params = {"now": now, "id": batch["id"]}
    if confirm:
        await confirm_batches(conn, "b.id = :id", params)
        refunded = 0
    else:
        _, refunded = await cancel_batches(conn, "b.id = :id", params, note or "cancelled after admin review")
    return refunded


# ---------------------------------------------------------------- outbox


async def pending_events(conn: AsyncConnection, limit: int) -> list[RowMapping]:
    return await _all(
        conn,
        "SELECT o.id, n.namespace, o.type, o.occurred_time, o.data FROM batch.outbox o, batch.outbox_namespace n "
        "WHERE o.delivered_time IS NULL ORDER BY o.id LIMIT :limit FOR UPDATE OF o",
        limit=limit,
    )


async def mark_delivered(conn: AsyncConnection, ids: Sequence[int], now: datetime) -> None:
    await conn.execute(
        text("UPDATE batch.outbox SET delivered_time = :now WHERE id = ANY(:ids)"), {"now": now, "ids": list(ids)}
    )


async def try_outbox_lock(conn: AsyncConnection) -> bool:
    """One dispatcher (across replicas) delivers at a time, so events leave in order."""
    return (
        await conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": OUTBOX_LOCK})
    ).scalar_one()


# ---------------------------------------------------------------- price snapshots and retention


async def latest_snapshot_prices(conn: AsyncConnection) -> dict[tuple[str, str], Decimal]:
    rows = await _all(
        conn,
        """
        SELECT DISTINCT ON (supplier_id, category) supplier_id, category, unit_price
        FROM batch.price_snapshots ORDER BY supplier_id, category, capture_time DESC, id DESC
        """,
    )
    return {(str(r["supplier_id"]), r["category"]): r["unit_price"] for r in rows}


async def active_suppliers(conn: AsyncConnection) -> list[domain.SupplierTerms]:
    return [supplier_terms(r) for r in await _all(conn, "SELECT * FROM batch.suppliers WHERE active ORDER BY id")]


async def insert_snapshots(conn: AsyncConnection, rows: list[dict]) -> None:
    if rows:
        await conn.execute(
            text(
                "INSERT INTO batch.price_snapshots (capture_time, supplier_id, category, unit_price, change_percent, "
                "market_change) VALUES (:capture_time, :supplier_id, :category, :unit_price, :change_percent, "
                ":market_change)"
            ),
            rows,
        )


async def price_history(conn: AsyncConnection, category: str, since: datetime) -> list[RowMapping]:
    return await _all(
        conn,
        "SELECT * FROM batch.price_snapshots WHERE category = :category AND capture_time >= :since "
        "ORDER BY capture_time, supplier_id",
        category=category,
        since=since,
    )


async def purge(
    conn: AsyncConnection, outbox_before: datetime, idempotency_before: datetime, snapshots_before: datetime
) -> tuple[int, int, int]:
    outbox = await conn.execute(
        text("DELETE FROM batch.outbox WHERE delivered_time IS NOT NULL AND delivered_time < :t"), {"t": outbox_before}
    )
    keys = await conn.execute(
        text("DELETE FROM batch.idempotency_keys WHERE create_time < :t"), {"t": idempotency_before}
    )
    snapshots = await conn.execute(
        text("DELETE FROM batch.price_snapshots WHERE capture_time < :t"), {"t": snapshots_before}
    )
    return outbox.rowcount, keys.rowcount, snapshots.rowcount
