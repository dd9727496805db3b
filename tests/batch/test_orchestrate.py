"""Orchestration: set-based, idempotent, in agreement with the pure decision, safe against PlaceOrder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loom.batch.v1 import batch_pb2 as pb

from libs.scratch_db import plain_url
from services.batch import domain
from tests.batch.conftest import ADMIN, create_supplier, place, request_id, unique_category
from tests.support import serve, stub_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def stub(own_database):
    async with serve("batch", own_database, outbox_dispatch=False) as running, stub_for("batch", running.target) as s:
        yield s


@pytest.fixture
def sql(own_database):
    with psycopg.connect(plain_url(own_database), autocommit=True) as conn:
        conn.execute("UPDATE batch.batches SET status = 'completed' WHERE status = 'filling'")  # start clean
        conn.execute("DELETE FROM batch.filling_batches")
        yield conn


def at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def orchestrate(stub, now: datetime | None = None, *, dry_run: bool = False) -> pb.OrchestrateResponse:
    request = pb.OrchestrateRequest(request_id=request_id(), dry_run=dry_run)
    if now is not None:
        request.now.CopyFrom(at(now))
    return await stub.Orchestrate(request, metadata=ADMIN)


async def batch_at(stub, sql, quantity: int, *, target: int = 10_000) -> pb.PlaceOrderResponse:
    """A batch holding one order of `quantity` units of a target-unit batch (10 days window)."""
    category = unique_category()
    await create_supplier(stub, category, moq=target, capacity=target * 2)
    return await place(stub, category, quantity)


def event_count(sql, event_type: str, batch_id: str) -> int:
    return sql.execute(
        "SELECT count(*) FROM batch.outbox WHERE type = %s AND data->'batch'->>'id' = %s", (event_type, batch_id)
    ).fetchone()[0]


async def test_sql_orchestration_agrees_with_the_pure_decision_at_every_boundary(stub, sql):
    now = datetime.now(UTC)
    thresholds = domain.Thresholds()
    cases = []
    for quantity in (4_999, 5_000, 5_999, 6_000, 7_499, 7_500):
        for closes_in in (timedelta(days=3), timedelta(hours=12), -timedelta(minutes=1)):
            placed = await batch_at(stub, sql, quantity)
            sql.execute(
                "UPDATE batch.batches SET window_close_time = %s WHERE id = %s", (now + closes_in, placed.batch.batch_id)
            )
            expected = domain.decide(domain.FillingBatch(quantity, 10_000, now + closes_in), now, thresholds)
            cases.append((placed.batch.batch_id, expected))
    dry = await orchestrate(stub, now, dry_run=True)
    reply = await orchestrate(stub, now)
    for name in ("batches_confirmed", "flagged_for_review", "batches_cancelled", "nearing_target_events",
                 "closing_soon_events", "orders_refunded", "supplier_orders_created"):
        assert getattr(dry, name) == getattr(reply, name), name
    event_of = {
        domain.Action.CONFIRM: "batch.confirmed",
        domain.Action.FLAG_FOR_REVIEW: "batch.needs_review",
        domain.Action.CANCEL: "batch.cancelled",
        domain.Action.NEARING_TARGET: "batch.nearing_target",
        domain.Action.CLOSING_SOON: "batch.closing_soon",
    }
    for batch_id, expected in cases:
        happened = {action for action, event in event_of.items() if event_count(sql, event, batch_id)}
        assert happened == expected, (batch_id, expected)
    assert reply.batches_confirmed == 3 and reply.supplier_orders_created == 3
    assert (reply.flagged_for_review, reply.batches_cancelled, reply.orders_refunded) == (4, 1, 1)


async def test_orchestrating_twice_changes_nothing_the_second_time(stub, sql):
    confirmed = await batch_at(stub, sql, 8_000)
    await batch_at(stub, sql, 6_500)
    first = await orchestrate(stub)
    assert first.batches_confirmed == 1 and first.nearing_target_events == 1
    outbox_before = sql.execute("SELECT count(*) FROM batch.outbox").fetchone()[0]
    second = await orchestrate(stub)
    assert (second.batches_confirmed, second.supplier_orders_created, second.nearing_target_events,
            second.closing_soon_events, second.batches_cancelled, second.flagged_for_review) == (0, 0, 0, 0, 0, 0)
    assert sql.execute("SELECT count(*) FROM batch.outbox").fetchone()[0] == outbox_before
    assert sql.execute(
        "SELECT count(*) FROM batch.supplier_orders WHERE batch_id = %s", (confirmed.batch.batch_id,)
    ).fetchone()[0] == 1
    order = sql.execute("SELECT status FROM batch.orders WHERE id = %s", (confirmed.order.order_id,)).fetchone()[0]
    assert order == "confirmed"


async def test_cancel_and_refund_touches_every_contributing_order_once(stub, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=1_000, capacity=2_000)
    orders = [await place(stub, category, 50, buyer=f"r{i}") for i in range(4)]
    later = datetime.now(UTC) + timedelta(days=30)
    reply = await orchestrate(stub, later)
    assert reply.batches_cancelled == 1 and reply.orders_refunded == 4
    statuses = sql.execute(
        "SELECT status, count(*) FROM batch.orders WHERE category = %s GROUP BY status", (category,)
    ).fetchall()
    assert statuses == [("refunded", 4)]
    assert sql.execute(
        "SELECT count(*) FROM batch.refunds WHERE batch_id = %s", (orders[0].batch.batch_id,)
    ).fetchone()[0] == 4
    assert (await orchestrate(stub, later)).orders_refunded == 0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateOrderStatus(
            pb.UpdateOrderStatusRequest(request_id=request_id(), order_id=orders[0].order.order_id,
                                        status=pb.ORDER_STATUS_REFUNDED),
            metadata=ADMIN,
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_review_is_resolved_by_an_admin(stub, sql):
    to_confirm = await batch_at(stub, sql, 6_000)
    to_cancel = await batch_at(stub, sql, 5_500)
    later = datetime.now(UTC) + timedelta(days=30)
    assert (await orchestrate(stub, later)).flagged_for_review == 2
    review = await stub.ListBatches(pb.ListBatchesRequest(needs_review=True), metadata=ADMIN)
    assert {b.batch_id for b in review.batches} >= {to_confirm.batch.batch_id, to_cancel.batch.batch_id}

    async def resolve(batch_id, decision):
        return await stub.ResolveReview(
            pb.ResolveReviewRequest(request_id=request_id(), batch_id=batch_id, decision=decision), metadata=ADMIN
        )

    confirmed = await resolve(to_confirm.batch.batch_id, pb.REVIEW_DECISION_CONFIRM)
    assert confirmed.batch.status == pb.BATCH_STATUS_CONFIRMED and confirmed.batch.supplier_order_number
    cancelled = await resolve(to_cancel.batch.batch_id, pb.REVIEW_DECISION_CANCEL)
    assert cancelled.batch.status == pb.BATCH_STATUS_CANCELLED and cancelled.orders_refunded == 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await resolve(to_cancel.batch.batch_id, pb.REVIEW_DECISION_CONFIRM)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_filling_set_follows_every_way_out_of_filling(stub, sql):
    small = await batch_at(stub, sql, 100)
    confirmed_now = await batch_at(stub, sql, 8_000)
    await orchestrate(stub)
    cancelled_later = await batch_at(stub, sql, 100)
    reviewed = await batch_at(stub, sql, 6_000)
    await orchestrate(stub, datetime.now(UTC) + timedelta(days=30))
    await stub.ResolveReview(
        pb.ResolveReviewRequest(request_id=request_id(), batch_id=reviewed.batch.batch_id, decision=pb.REVIEW_DECISION_CONFIRM),
        metadata=ADMIN,
    )
    filling = {str(row[0]) for row in sql.execute("SELECT id FROM batch.filling_batches")}
    by_status = {str(row[0]) for row in sql.execute("SELECT id FROM batch.batches WHERE status = 'filling'")}
    assert filling == by_status
    ended = {small.batch.batch_id, confirmed_now.batch.batch_id, cancelled_later.batch.batch_id, reviewed.batch.batch_id}
    assert not ended & filling
    fresh = await batch_at(stub, sql, 100)
    assert fresh.batch.batch_id in {str(row[0]) for row in sql.execute("SELECT id FROM batch.filling_batches")}


async def test_batches_advance_through_production_and_nowhere_else(stub, sql):
    placed = await batch_at(stub, sql, 9_000)
    await orchestrate(stub)

    async def advance(status):
        return await stub.AdvanceBatch(
            pb.AdvanceBatchRequest(request_id=request_id(), batch_id=placed.batch.batch_id, status=status), metadata=ADMIN
        )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await advance(pb.BATCH_STATUS_COMPLETED)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await advance(pb.BATCH_STATUS_IN_PRODUCTION)).batch.status == pb.BATCH_STATUS_IN_PRODUCTION
    order = await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order.order_id), metadata=ADMIN)
    assert order.order.status == pb.ORDER_STATUS_IN_PRODUCTION
    assert (await advance(pb.BATCH_STATUS_COMPLETED)).batch.status == pb.BATCH_STATUS_COMPLETED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await advance(pb.BATCH_STATUS_FILLING)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_orchestrate_racing_place_order_never_confirms_a_half_written_order(stub, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=100, capacity=10_000)
    placing = [place(stub, category, 5, buyer=f"race{i}") for i in range(40)]
    running = [orchestrate(stub) for _ in range(6)]
    results = await asyncio.gather(*placing, *running)
    await orchestrate(stub)
    batches = sql.execute(
        "SELECT id, status, current_quantity FROM batch.batches WHERE category = %s", (category,)
    ).fetchall()
    for batch_id, status, quantity in batches:
        contributed, statuses = sql.execute(
            """
            SELECT coalesce(sum(c.quantity), 0), array_agg(DISTINCT o.status)
            FROM batch.orders o JOIN batch.contributions c ON c.order_id = o.id WHERE o.batch_id = %s
            """,
            (batch_id,),
        ).fetchone()
        assert contributed == quantity
        if status == "confirmed":
            assert statuses == ["confirmed"]
            assert sql.execute(
                "SELECT quantity FROM batch.supplier_orders WHERE batch_id = %s", (batch_id,)
            ).fetchone()[0] == quantity
    assert sum(1 for r in results if isinstance(r, pb.PlaceOrderResponse)) == 40


def event_data(sql, event_type: str, entity: str, entity_id: str) -> dict:
    return sql.execute(
        f"SELECT data FROM batch.outbox WHERE type = %s AND data->'{entity}'->>'id' = %s", (event_type, entity_id)
    ).fetchone()[0]


async def test_confirm_and_cancel_events_carry_the_changed_entities(stub, sql):
    confirmed = await batch_at(stub, sql, 8_000)
    cancelled = await batch_at(stub, sql, 1_000)
    sql.execute(
        "UPDATE batch.batches SET window_close_time = now() - interval '1 hour' WHERE id = %s",
        (cancelled.batch.batch_id,),
    )
    await orchestrate(stub)
    batch_event = event_data(sql, "batch.confirmed", "batch", confirmed.batch.batch_id)
    assert batch_event["batch"]["status"] == "confirmed" and batch_event["batch"]["supplier_order_number"]
    assert batch_event["supplier"]["id"] == confirmed.batch.supplier_id
    order_event = event_data(sql, "order.status_changed", "order", confirmed.order.order_id)
    assert order_event["order"]["status"] == "confirmed" and order_event["batch"] == batch_event["batch"]
    refund_event = event_data(sql, "order.refunded", "order", cancelled.order.order_id)
    assert refund_event["order"]["status"] == "refunded" and refund_event["batch"]["status"] == "cancelled"
    assert refund_event["reason"] == event_data(sql, "batch.cancelled", "batch", cancelled.batch.batch_id)["reason"]
    assert refund_event["batch"]["window_closes_at"].endswith("Z")
