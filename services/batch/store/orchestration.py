"""Orchestration's set-based statements: each acts on every filling batch it selects at once.

The predicates are the SQL form of domain.decide (an integration test holds the two to
agreement); `services.batch.usecases.orchestration` runs them in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.batch import domain
from services.batch.records import OrchestrationCounts
from services.batch.store.schema import fetch_one

# Each predicate selects filling batches over alias b.
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
ONE_BATCH = "b.id = :id"  # selects the batch of params {"id": ...}, whatever its fill

# Flag-only actions: one statement sets the flag and writes the event from the updated rows.
FLAGS = {
    domain.Action.FLAG_FOR_REVIEW: ("needs_review", "batch.needs_review"),
    domain.Action.NEARING_TARGET: ("nearing_target_notified", "batch.nearing_target"),
    domain.Action.CLOSING_SOON: ("closing_soon_notified", "batch.closing_soon"),
}


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


async def flag_batches(conn: AsyncConnection, action: domain.Action, params: dict) -> int:
    """Sets the action's flag on the batches it selects, each with its one-time event; how many."""
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


async def count_filling(conn: AsyncConnection) -> int:
    return (await conn.execute(text("SELECT count(*) FROM batch.filling_batches"))).scalar_one()


async def would_orchestrate(conn: AsyncConnection, params: dict) -> OrchestrationCounts:
    """The counts a real run with these threshold params would report now, changing nothing."""
    p = PREDICATES
    row = await fetch_one(
        conn,
        f"""
        SELECT count(*) AS examined,
               count(*) FILTER (WHERE {p[domain.Action.CONFIRM]}) AS confirmed,
               count(*) FILTER (WHERE {p[domain.Action.FLAG_FOR_REVIEW]}) AS flagged,
               count(*) FILTER (WHERE {p[domain.Action.CANCEL]}) AS cancelled,
               count(*) FILTER (WHERE {p[domain.Action.NEARING_TARGET]}) AS nearing,
               count(*) FILTER (WHERE {p[domain.Action.CLOSING_SOON]}) AS closing,
               (SELECT count(*) FROM batch.orders o JOIN batch.filling_batches f ON f.id = o.batch_id
                JOIN batch.batches b ON b.id = f.id
                WHERE {p[domain.Action.CANCEL]} AND o.status IN ('placed', 'awaiting_supplier')) AS refunded
        FROM batch.batches b JOIN batch.filling_batches f ON f.id = b.id WHERE b.status = 'filling'
        """,
        **params,
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
