"""Group commit of PlaceOrders: one transaction per group, its orders placed together where they can be,
answers after the commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import psycopg
import pytest
from loom.batch.v1 import batch_pb2 as pb

from libs.db import make_engine
from libs.errors import FailedPrecondition, InvalidArgument
from libs.scratch_db import plain_url
from services.batch import domain
from services.batch.combiner import GroupCommitter
from services.batch.messages import OrderItem
from services.batch.placement_group import OrderPlacement
from services.batch.store.placement import JOIN_BATCH
from services.batch.store.schema import IDEMPOTENCY
from tests.batch.conftest import create_supplier, request_id, unique_category
from tests.support import ServiceProcess, auth, free_port, process_env, settings_for, stub_for, wait_serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def committer(database_url):
    engine = make_engine(database_url, application_name="test-combiner", pool_size=2)
    settings = settings_for("batch", database_url)
    committer = GroupCommitter(engine, IDEMPOTENCY, OrderPlacement(settings), attempts=3, max_group=64)
    yield committer
    await committer.close()
    await engine.dispose()


def order_work(category: str, quantity: int, rid: str):
    """What PlaceOrder submits: the validated order, to be placed by the group commit."""
    request = pb.PlaceOrderRequest(request_id=rid, category=category, quantity=quantity)
    order = domain.OrderRequest("buyer", category, quantity, 1, [], [], "")
    return "PlaceOrder", request, pb.PlaceOrderResponse, OrderItem(order, pb.StyleDetails(style_count=1), {"style_count": 1})



async def until_a_backend_waits_on_a_lock(sql, failure: str) -> None:
    deadline = time.monotonic() + 10
    while not sql.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()[0]:
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.01)

async def test_a_failing_order_in_a_group_rolls_back_alone(stub, committer, sql):
    category = unique_category()
    await create_supplier(stub, category, capacity=200)
    first, replayed, too_big_id = request_id(), request_id(), request_id()
    outcomes = await asyncio.gather(
        committer.submit(*order_work(category, 10, first)),
        committer.submit(*order_work(category, 500, too_big_id)),  # more than any supplier's capacity
        committer.submit(*order_work(category, 20, replayed)),
        committer.submit(*order_work(category, 21, replayed)),  # same request_id, another request
        committer.submit(*order_work(category, 10, first)),  # replay inside the same group
        committer.submit(*order_work(category, 30, request_id())),
        return_exceptions=True,
    )
    placed, too_big, second, conflict, replay, third = outcomes
    assert isinstance(too_big, FailedPrecondition)
    keys = sql.execute("SELECT count(*) FROM batch.idempotency_keys WHERE request_id = %s", (too_big_id,)).fetchone()[0]
    assert keys == 0, "a failed request leaves no key behind"
    assert isinstance(conflict, InvalidArgument)
    assert replay == placed
    rows = sql.execute(
        "SELECT id::text, quantity FROM batch.orders WHERE category = %s ORDER BY quantity", (category,)
    ).fetchall()
    assert [r[0] for r in rows] == [placed.order.order_id, second.order.order_id, third.order.order_id]
    batch = sql.execute(
        "SELECT current_quantity, order_count FROM batch.batches WHERE category = %s", (category,)
    ).fetchall()
    assert batch == [(60, 3)]


async def test_orders_placed_together_each_see_the_batch_as_right_after_their_own_join(stub, committer, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=100, capacity=200)
    opened = await committer.submit(*order_work(category, 10, request_id()))
    replies = await asyncio.gather(*(committer.submit(*order_work(category, q, request_id())) for q in (1, 2, 3, 4)))
    assert {r.batch.batch_id for r in replies} == {opened.batch.batch_id}
    assert [(r.batch.current_quantity, r.batch.order_count) for r in replies] == [(11, 2), (13, 3), (16, 4), (20, 5)]
    assert [r.batch.fill_percentage for r in replies] == [11, 13, 16, 20]
    events = sql.execute(
        "SELECT data->'order'->>'id', (data->'batch'->>'current_quantity')::int FROM batch.outbox "
        "WHERE type = 'order.placed' AND data->'order'->>'category' = %s ORDER BY id",
        (category,),
    ).fetchall()
    assert events == [(opened.order.order_id, 10)] + [(r.order.order_id, r.batch.current_quantity) for r in replies]
    batch = sql.execute(
        "SELECT current_quantity, order_count, (SELECT sum(quantity) FROM batch.contributions WHERE batch_id = b.id) "
        "FROM batch.batches b WHERE category = %s",
        (category,),
    ).fetchall()
    assert batch == [(20, 5, 20)]


async def test_orders_whose_batch_filled_up_since_the_group_looked_are_placed_one_by_one(stub, committer, database_url, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=100, capacity=100)
    opened = await committer.submit(*order_work(category, 10, request_id()))
    batch_id = opened.batch.batch_id
    with psycopg.connect(plain_url(database_url)) as other_replica:
        # Another replica's order takes 80 more of the batch, not yet committed: the group
        # still sees room for its 3 x 5 and only finds 10 left once it gets the row lock.
        price = domain.price_order(Decimal(5), Decimal(15), 80, "USD")
        other_replica.execute(JOIN_BATCH, {
            "batch_id": batch_id, "quantity": 80, "style_count": 1, "order_id": str(uuid.uuid4()),
            "contribution_id": str(uuid.uuid4()), "buyer_id": "other", "style": '{"style_count": 1}',
            "currency": "USD", "supplier_unit_price": price.supplier_unit_price, "margin_percent": price.margin_percent,
            "unit_price": price.unit_price, "subtotal": price.subtotal, "margin_amount": price.margin_amount,
            "total": price.total, "now": datetime.now(UTC),
        })
        group = asyncio.gather(*(committer.submit(*order_work(category, 5, request_id())) for _ in range(3)))
        await until_a_backend_waits_on_a_lock(sql, "the group never reached the locked batch")
        other_replica.commit()
    replies = await asyncio.wait_for(group, 10)
    assert [r.batch.batch_id == batch_id for r in replies] == [True, True, False]
    assert [r.batch.current_quantity for r in replies] == [95, 100, 5]
    rows = sql.execute(
        "SELECT b.current_quantity, sum(c.quantity) FROM batch.batches b JOIN batch.contributions c ON c.batch_id = b.id "
        "WHERE b.category = %s GROUP BY b.id ORDER BY b.current_quantity",
        (category,),
    ).fetchall()
    assert rows == [(5, 5), (100, 100)]


async def test_a_batch_confirmed_between_two_groups_takes_no_more_orders(stub, committer, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=100, capacity=200)
    first = await committer.submit(*order_work(category, 10, request_id()))
    sql.execute("UPDATE batch.batches SET status = 'confirmed' WHERE id = %s", (first.batch.batch_id,))
    second = await committer.submit(*order_work(category, 10, request_id()))
    assert second.batch.batch_id != first.batch.batch_id and second.batch_opened
    assert sql.execute("SELECT current_quantity FROM batch.batches WHERE id = %s", (first.batch.batch_id,)).fetchone()[0] == 10


async def test_two_replicas_racing_for_small_batches_never_overfill(stub, committer, database_url, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=60, capacity=100)
    engine = make_engine(database_url, application_name="test-combiner-2", pool_size=2)
    other = GroupCommitter(engine, IDEMPOTENCY, OrderPlacement(settings_for("batch", database_url)), attempts=6, max_group=64)
    try:
        quantities = [7 + (i * 13) % 29 for i in range(48)]
        replies = await asyncio.gather(
            *((committer if i % 2 else other).submit(*order_work(category, q, request_id())) for i, q in enumerate(quantities))
        )
    finally:
        await other.close()
        await engine.dispose()
    assert sorted(r.order.quantity for r in replies) == sorted(quantities)
    rows = sql.execute(
        """
        SELECT b.current_quantity, b.capacity, b.order_count, sum(c.quantity), count(c.id)
        FROM batch.batches b JOIN batch.contributions c ON c.batch_id = b.id WHERE b.category = %s GROUP BY b.id
        """,
        (category,),
    ).fetchall()
    for current, capacity, order_count, contributed, contributions in rows:
        assert current == contributed <= capacity
        assert order_count == contributions
    assert sum(r[0] for r in rows) == sum(quantities)


async def test_no_order_of_a_group_is_answered_before_the_group_commits(stub, committer, database_url, sql):
    free, locked = unique_category(), unique_category()
    for category in (free, locked):
        await create_supplier(stub, category)
    opened = await committer.submit(*order_work(locked, 1, request_id()))
    with psycopg.connect(plain_url(database_url), autocommit=True) as locker:
        locker.execute("BEGIN")
        locker.execute("SELECT 1 FROM batch.batches WHERE id = %s FOR UPDATE", (opened.batch.batch_id,))
        done_first = asyncio.ensure_future(committer.submit(*order_work(free, 2, request_id())))
        blocked = asyncio.ensure_future(committer.submit(*order_work(locked, 2, request_id())))
        await until_a_backend_waits_on_a_lock(sql, "the second order never reached the locked batch")
        # The first order is written (the group has moved on to the second), but neither
        # committed nor answered: the two share one transaction.
        assert not done_first.done() and not blocked.done()
        assert sql.execute("SELECT count(*) FROM batch.orders WHERE category = %s", (free,)).fetchone()[0] == 0
        locker.execute("COMMIT")
    first, second = await asyncio.wait_for(asyncio.gather(done_first, blocked), 10)
    stored = sql.execute(
        "SELECT count(*) FROM batch.orders WHERE id IN (%s, %s)", (first.order.order_id, second.order.order_id)
    ).fetchone()[0]
    assert stored == 2


async def test_a_group_whose_connection_died_reruns_on_a_fresh_one(stub, committer, sql):
    category = unique_category()
    await create_supplier(stub, category)
    first = await committer.submit(*order_work(category, 1, request_id()))
    killed = sql.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'test-combiner'"
    ).fetchone()[0]
    assert killed == 1, "the committer keeps one connection of its own between groups"
    second = await committer.submit(*order_work(category, 2, request_id()))
    assert second.batch.batch_id == first.batch.batch_id
    assert sql.execute("SELECT current_quantity FROM batch.batches WHERE category = %s", (category,)).fetchone()[0] == 3


async def hot_load(stub, category: str, acknowledged: dict[str, str], stop: asyncio.Event, client: int) -> None:
    n = 0
    while not stop.is_set():
        rid = f"crash-{client}-{n}-{category}"
        n += 1
        try:
            reply = await stub.PlaceOrder(
                pb.PlaceOrderRequest(request_id=rid, category=category, quantity=1, style=pb.StyleDetails(style_count=1)),
                metadata=auth("buyer", f"b{client}"),
                timeout=10,
            )
        except grpc.aio.AioRpcError:
            return  # the server died under us: this one was never acknowledged
        acknowledged[rid] = reply.order.order_id


@pytest.mark.e2e
async def test_every_acknowledged_order_survives_kill_9(stub, database_url, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=100_000, capacity=1_000_000, max_styles_per_batch=1_000)
    port = free_port()
    env = process_env("batch", database_url, port, LOOM_OUTBOX_DISPATCH="false")
    server = ServiceProcess("batch", env).start()
    target = f"127.0.0.1:{port}"
    acknowledged: dict[str, str] = {}
    try:
        await wait_serving(target)
        stop = asyncio.Event()
        async with stub_for("batch", target) as crash_stub:
            clients = [asyncio.create_task(hot_load(crash_stub, category, acknowledged, stop, c)) for c in range(16)]
            deadline = time.monotonic() + 60
            while len(acknowledged) < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            server.kill()  # mid-load: groups are being applied and committed
            stop.set()
            await asyncio.gather(*clients)
        assert len(acknowledged) >= 200
        stored = {
            str(r[0])
            for r in sql.execute("SELECT id FROM batch.orders WHERE category = %s", (category,)).fetchall()
        }
        assert set(acknowledged.values()) <= stored
        current, contributed = sql.execute(
            """
            SELECT sum(b.current_quantity), (SELECT sum(c.quantity) FROM batch.contributions c
                                             JOIN batch.batches cb ON cb.id = c.batch_id WHERE cb.category = %s)
            FROM batch.batches b WHERE b.category = %s
            """,
            (category, category),
        ).fetchone()
        assert current == contributed == len(stored)

        server = ServiceProcess("batch", env).start()
        await wait_serving(target)
        async with stub_for("batch", target) as crash_stub:
            for rid in list(acknowledged)[:20]:
                client = rid.split("-")[1]
                replay = await crash_stub.PlaceOrder(
                    pb.PlaceOrderRequest(request_id=rid, category=category, quantity=1, style=pb.StyleDetails(style_count=1)),
                    metadata=auth("buyer", f"b{client}"),
                )
                assert replay.order.order_id == acknowledged[rid]
        assert sql.execute("SELECT count(*) FROM batch.orders WHERE category = %s", (category,)).fetchone()[0] == len(stored)
    finally:
        if server.process and server.process.poll() is None:
            server.kill()
