"""PlaceOrder: find an open compatible batch or open one with the best supplier, price the
order, and join, all in the caller's transaction (the group commit's, see combiner.py).

Invariant: a batch's quantity equals the sum of its contributions and never exceeds its
capacity. The choice is made on what was last seen of the category's open batches; the
join re-checks the batch under its row lock, so a stale choice costs a retry, not the
invariant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from libs.domain_errors import Unavailable
from services.batch import domain
from services.batch.records import PlacedOrder
from services.batch.store import placement
from services.batch.store.schema import advisory_xact_lock
from services.batch.usecases.suppliers import recommend_supplier

PLACE_ATTEMPTS = 20
SEEN_CATEGORIES = 10_000  # at most 50 batches each: a few MB at most

# What a group commit remembers of each category's open batches (see place_order).
SeenBatches = dict[str, list[domain.OpenBatch]]


async def place_order(
    conn: AsyncConnection,
    order: domain.OrderRequest,
    style: dict,
    *,
    margin_percent: Decimal,
    currency: str,
    window: timedelta,
    now: datetime,
    seen: SeenBatches | None = None,
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
        candidates = (
            remembered if remembered is not None
            else (await placement.open_batches(conn, [order.category], now))[order.category]
        )
        remembered = None
        chosen = domain.choose_batch(candidates, order.quantity, order.style_count, now)
        if chosen is None:
            # One opener per category at a time, so racing orders share the new batch.
            await advisory_xact_lock(conn, f"open:{order.category}")
            candidates = (await placement.open_batches(conn, [order.category], now))[order.category]
            chosen = domain.choose_batch(candidates, order.quantity, order.style_count, now)
            if chosen is None:
                supplier = await recommend_supplier(conn, order.category, order.quantity, order.style_count)
                chosen = await placement.start_batch(conn, supplier, order.category, window, now)
                candidates = [*candidates, chosen]
                opened = True
        price = domain.price_order(chosen.unit_price, margin_percent, order.quantity, currency)
        joined = await placement.join_batch(conn, chosen.batch_id, order, style_json, price, order_id, contribution_id, now)
        if joined is not None:
            if seen is not None:
                seen[order.category] = [joined.as_open if b is chosen else b for b in candidates]
            return PlacedOrder(order_id, contribution_id, joined, price, opened, now)
    raise Unavailable("the category's batches are changing too fast; retry the same request_id")


async def place_orders(
    conn: AsyncConnection,
    orders: Sequence[tuple[domain.OrderRequest, dict]],
    *,
    margin_percent: Decimal,
    currency: str,
    now: datetime,
    seen: SeenBatches,
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
        seen.update(await placement.open_batches(conn, unseen, now))
    planned: dict[int, tuple[domain.OrderRequest, str, str, domain.Price]] = {}
    rows = []
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
        rows.append(placement.planned_order(n, chosen.batch_id, order, style, price, order_id, contribution_id))
    placed: list[PlacedOrder | None] = [None] * len(orders)
    if not rows:
        return placed
    left: dict[str, domain.OpenBatch] = {}  # each batch as the statement left it
    for n, batch in await placement.place_many(conn, rows, now):
        _, order_id, contribution_id, price = planned[n]
        placed[n] = PlacedOrder(order_id, contribution_id, batch, price, False, now)
        left[batch.id] = batch.as_open
    refused = {order.category for n, (order, *_) in planned.items() if placed[n] is None}
    for category in {order.category for order, *_ in planned.values()}:
        if category in refused:
            seen.pop(category, None)
        elif category in seen:
            seen[category] = [left.get(b.batch_id, b) for b in seen[category]]
    return placed
