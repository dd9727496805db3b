"""Outbox delivery to rules, WatchBatch streaming, price snapshots and trends, cost estimates, retention."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from loom.batch.v1 import batch_pb2 as pb
from loom.rules.v1 import rules_pb2, rules_pb2_grpc

from libs.errors import field_violations
from libs.scratch_db import plain_url
from services.batch.outbox import event_id
from tests.batch.conftest import ADMIN, SERVICE, create_supplier, place, request_id, unique_category
from tests.support import auth, serve, stub_for

pytestmark = pytest.mark.timeout(120)


class FakeRules(rules_pb2_grpc.RulesServiceServicer):
    """The rules service's DeliverEvents, as a peer we do not run here: it records what arrives
    and answers UNAVAILABLE while `down`."""

    def __init__(self) -> None:
        self.received: list = []
        self.down = False
        self.calls = 0

    async def DeliverEvents(self, request, context):
        self.calls += 1
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "rules is down")
        self.received.extend(request.events)
        return rules_pb2.DeliverEventsResponse(accepted=len(request.events))


@pytest.fixture(scope="module")
async def fake_rules():
    server = grpc.aio.server()
    rules = FakeRules()
    rules_pb2_grpc.add_RulesServiceServicer_to_server(rules, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rules.target = f"127.0.0.1:{port}"
    yield rules
    await server.stop(0)


@pytest.fixture(scope="module")
async def stub(own_database, fake_rules):
    async with serve(
        "batch", own_database, rules_target=fake_rules.target, outbox_poll_seconds=0.1, outbox_max_backoff_seconds=0.3
    ) as running, stub_for("batch", running.target) as s:
        yield s


@pytest.fixture
def sql(own_database):
    with psycopg.connect(plain_url(own_database), autocommit=True) as conn:
        yield conn


async def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_events_reach_rules_in_order_with_the_contract_shape(stub, fake_rules, sql):
    category = unique_category()
    supplier = await create_supplier(stub, category)
    placed = await place(stub, category, 30)
    await eventually(lambda: any(e.data["order"]["id"] == placed.order.order_id for e in fake_rules.received
                                 if "order" in e.data))
    mine = [e for e in fake_rules.received if e.data["batch"]["id"] == placed.batch.batch_id]
    assert [e.type for e in mine] == ["batch.opened", "order.placed"]
    order_event = mine[1]
    assert order_event.source == "batch" and len(order_event.event_id) == 36
    order = order_event.data["order"]
    assert order["status"] == "placed" and order["total_price"] == "172.50" and order["quantity"] == 30
    batch = order_event.data["batch"]
    assert batch["fill_percentage"] == "30.00" and batch["supplier_id"] == supplier.supplier_id
    assert batch["status"] == "filling" and batch["window_closes_at"].endswith("Z")
    assert mine[0].data["supplier"]["name"] == supplier.name
    pending = sql.execute("SELECT count(*) FROM batch.outbox WHERE delivered_time IS NULL").fetchone()[0]
    assert pending == 0


def test_event_ids_are_stable_per_outbox_row_and_distinct_across_rows_and_databases():
    mine, other = uuid.uuid4(), uuid.uuid4()
    assert event_id(mine, 7) == event_id(mine, 7)
    assert len({event_id(mine, row) for row in range(10_000)}) == 10_000
    assert event_id(mine, 7) != event_id(other, 7)
    assert uuid.UUID(event_id(mine, 7)).version == 5


async def test_free_text_reaches_rules_exactly_as_written(stub, fake_rules):
    category = unique_category()
    awkward = 'Quote " backslash \\ newline \n tab \t unicode \u00e9 braces {} and %s'
    supplier = await create_supplier(stub, category, name=awkward)
    placed = await place(stub, category, 10, buyer=awkward)
    await eventually(lambda: any(e.type == "order.placed" and e.data["order"]["id"] == placed.order.order_id
                                 for e in fake_rules.received))
    opened = next(e for e in fake_rules.received if e.type == "batch.opened" and e.data["batch"]["id"] == placed.batch.batch_id)
    assert opened.data["supplier"]["name"] == awkward == supplier.name
    order_event = next(
        e for e in fake_rules.received if e.type == "order.placed" and e.data["order"]["id"] == placed.order.order_id
    )
    assert order_event.data["order"]["buyer_id"] == awkward


async def test_an_event_offered_again_keeps_its_event_id(stub, fake_rules, sql):
    category = unique_category()
    await create_supplier(stub, category)
    placed = await place(stub, category, 10)
    def mine() -> list[str]:
        return [
            e.event_id for e in fake_rules.received if e.type == "order.placed" and e.data["order"]["id"] == placed.order.order_id
        ]

    await eventually(lambda: len(mine()) == 1)
    # As after a crash between delivering and marking delivered.
    sql.execute("UPDATE batch.outbox SET delivered_time = NULL WHERE type = 'order.placed' AND data->'order'->>'id' = %s",
                (placed.order.order_id,))
    await eventually(lambda: len(mine()) == 2)
    first, again = mine()
    assert first == again


async def test_while_rules_is_down_events_wait_and_then_arrive_once_each_in_order(stub, fake_rules, sql):
    category = unique_category()
    await create_supplier(stub, category)
    fake_rules.down = True
    calls_before, received_before = fake_rules.calls, len(fake_rules.received)
    placed = [await place(stub, category, 5, buyer=f"d{i}") for i in range(5)]
    await eventually(lambda: fake_rules.calls >= calls_before + 2)  # retried with backoff
    assert sql.execute("SELECT count(*) FROM batch.outbox WHERE delivered_time IS NULL").fetchone()[0] >= 6
    fake_rules.down = False
    ids = [p.order.order_id for p in placed]

    def delivered() -> list[str]:
        return [e.data["order"]["id"] for e in fake_rules.received if e.type == "order.placed" and e.data["order"]["id"] in ids]

    await eventually(lambda: len(delivered()) == 5)
    assert delivered() == ids
    event_ids = [e.event_id for e in fake_rules.received[received_before:]]
    assert len(event_ids) == len(set(event_ids))


async def test_watch_batch_streams_fill_changes_until_the_batch_ends(stub):
    category = unique_category()
    await create_supplier(stub, category, moq=100, capacity=200)
    first = await place(stub, category, 10)
    stream = stub.WatchBatch(pb.WatchBatchRequest(batch_id=first.batch.batch_id), metadata=ADMIN)
    seen = [(await stream.read()).batch.current_quantity]
    await place(stub, category, 20)
    seen.append((await asyncio.wait_for(stream.read(), 10)).batch.current_quantity)
    await place(stub, category, 60)
    seen.append((await asyncio.wait_for(stream.read(), 10)).batch.current_quantity)
    assert seen == [10, 30, 90]
    await stub.Orchestrate(pb.OrchestrateRequest(request_id=request_id()), metadata=ADMIN)
    confirmed = (await asyncio.wait_for(stream.read(), 10)).batch
    assert confirmed.status == pb.BATCH_STATUS_CONFIRMED
    for status in (pb.BATCH_STATUS_IN_PRODUCTION, pb.BATCH_STATUS_COMPLETED):
        await stub.AdvanceBatch(
            pb.AdvanceBatchRequest(request_id=request_id(), batch_id=first.batch.batch_id, status=status), metadata=ADMIN
        )
        assert (await asyncio.wait_for(stream.read(), 10)).batch.status == status
    assert await asyncio.wait_for(stream.read(), 10) == grpc.aio.EOF


async def test_watching_a_missing_batch_is_not_found(stub):
    import uuid

    stream = stub.WatchBatch(pb.WatchBatchRequest(batch_id=str(uuid.uuid4())), metadata=ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.read()
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def test_price_snapshots_record_changes_and_flag_market_moves(stub, sql):
    category = unique_category()
    supplier = await create_supplier(stub, category, price_tiers=[pb.PriceTier(min_quantity=1, unit_price="5.00")])
    now = datetime.now(UTC)

    async def capture(when):
        return await stub.CapturePriceSnapshot(
            pb.CapturePriceSnapshotRequest(request_id=request_id(), capture_time=at(when)), metadata=SERVICE
        )

    await capture(now - timedelta(days=14))
    await stub.UpdateSupplier(
        pb.UpdateSupplierRequest(
            request_id=request_id(),
            supplier=pb.Supplier(supplier_id=supplier.supplier_id, price_tiers=[pb.PriceTier(min_quantity=1, unit_price="5.25")]),
            update_mask={"paths": ["price_tiers"]},
        ),
        metadata=ADMIN,
    )
    await capture(now - timedelta(days=7))
    await stub.UpdateSupplier(
        pb.UpdateSupplierRequest(
            request_id=request_id(),
            supplier=pb.Supplier(supplier_id=supplier.supplier_id, price_tiers=[pb.PriceTier(min_quantity=1, unit_price="6.00")]),
            update_mask={"paths": ["price_tiers"]},
        ),
        metadata=ADMIN,
    )
    last = await capture(now)
    assert last.market_changes >= 1
    trend = await stub.GetPriceTrend(pb.GetPriceTrendRequest(category=category), metadata=auth("buyer", "b"))
    assert [(p.unit_price, p.change_percent, p.market_change) for p in trend.points] == [
        ("5.00", "", False), ("5.25", "5.00", False), ("6.00", "14.2857", True)
    ]
    assert [p.unit_price for p in trend.average_points] == ["5.00", "5.25", "6.00"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPriceTrend(pb.GetPriceTrendRequest(category=category, months=-1), metadata=ADMIN)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_estimate_cost_gives_an_exact_breakdown(stub):
    reply = await stub.EstimateCost(
        pb.EstimateCostRequest(
            line_items=[pb.CostLineItem(description="fabric", unit_cost="2.3333", quantity=3),
                        pb.CostLineItem(description="labour", unit_cost="1.10", quantity=10)],
            indirect_cost_percent="12.5", overhead_percent="10",
        ),
        metadata=auth("buyer", "b"),
    )
    assert [line.total for line in reply.lines] == ["7.00", "11.00"]
    assert (reply.direct_cost, reply.indirect_cost, reply.overhead, reply.total, reply.currency) == (
        "18.00", "2.25", "2.03", "22.28", "USD"
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.EstimateCost(
            pb.EstimateCostRequest(line_items=[pb.CostLineItem(unit_cost="1e400", quantity=-1)]), metadata=ADMIN
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"line_items[0].unit_cost", "line_items[0].quantity"} <= set(field_violations(raised.value))


async def test_purge_removes_only_old_delivered_events_keys_and_snapshots(stub, fake_rules, sql):
    category = unique_category()
    await create_supplier(stub, category)
    await place(stub, category, 5)
    await eventually(lambda: sql.execute("SELECT count(*) FROM batch.outbox WHERE delivered_time IS NULL").fetchone()[0] == 0)
    old = datetime.now(UTC) - timedelta(days=900)
    sql.execute("UPDATE batch.outbox SET delivered_time = %s WHERE id = (SELECT min(id) FROM batch.outbox)", (old,))
    sql.execute("INSERT INTO batch.outbox (type, data) VALUES ('test.pending', '{}')")
    sql.execute("UPDATE batch.outbox SET occurred_time = %s WHERE type = 'test.pending'", (old,))
    sql.execute(
        "INSERT INTO batch.price_snapshots (capture_time, supplier_id, category, unit_price) "
        "VALUES (%s, gen_random_uuid(), 'old_category', 1)",
        (old,),
    )
    fake_rules.down = True  # keep the pending row pending
    try:
        sql.execute("UPDATE batch.outbox SET delivered_time = NULL WHERE type = 'test.pending'")
        reply = await stub.PurgeOldData(pb.PurgeOldDataRequest(request_id=request_id()), metadata=SERVICE)
    finally:
        fake_rules.down = False
    assert (reply.outbox_rows_deleted, reply.snapshots_deleted) == (1, 1)
    assert sql.execute("SELECT count(*) FROM batch.outbox WHERE type = 'test.pending'").fetchone()[0] == 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PurgeOldData(pb.PurgeOldDataRequest(request_id=request_id(), retention_days=-3), metadata=SERVICE)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
