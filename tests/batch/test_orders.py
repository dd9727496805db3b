"""Suppliers and orders through real gRPC against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import grpc
import pytest
from loom.batch.v1 import batch_pb2 as pb

from libs.errors import field_violations
from tests.batch.conftest import ADMIN, SERVICE, create_supplier, place, request_id, supplier_message, unique_category
from tests.support import auth

pytestmark = pytest.mark.timeout(120)


def counts(sql, category: str) -> tuple[int, int, int]:
    """(orders, contributions, batches) of a category."""
    return sql.execute(
        """
        SELECT (SELECT count(*) FROM batch.orders WHERE category = %s),
               (SELECT count(*) FROM batch.contributions c JOIN batch.batches b ON b.id = c.batch_id WHERE b.category = %s),
               (SELECT count(*) FROM batch.batches WHERE category = %s)
        """,
        (category, category, category),
    ).fetchone()


def outbox_types(sql, entity_id: str) -> list[str]:
    rows = sql.execute(
        "SELECT type FROM batch.outbox WHERE data->'order'->>'id' = %s OR data->'batch'->>'id' = %s ORDER BY id",
        (entity_id, entity_id),
    ).fetchall()
    return [r[0] for r in rows]


async def test_first_order_opens_a_batch_with_the_best_supplier_and_prices_it(stub, sql):
    category = unique_category()
    await create_supplier(stub, category, name="Dear", price_tiers=[pb.PriceTier(min_quantity=1, unit_price="7.00")])
    cheap = await create_supplier(
        stub, category, name="Cheap", price_tiers=[pb.PriceTier(min_quantity=50, unit_price="4.20")], moq=50
    )
    reply = await place(stub, category, 20)
    assert reply.batch_opened
    assert reply.batch.supplier_id == cheap.supplier_id
    assert (reply.batch.target_quantity, reply.batch.current_quantity, reply.batch.unit_price) == (50, 20, "4.20")
    assert reply.price.subtotal == "84.00" and reply.price.margin_amount == "12.60" and reply.price.total == "96.60"
    assert reply.order.status == pb.ORDER_STATUS_PLACED and reply.contribution.quantity == 20
    assert outbox_types(sql, reply.batch.batch_id)[:2] == ["batch.opened", "order.placed"]


async def test_second_order_joins_the_open_batch(stub):
    category = unique_category()
    await create_supplier(stub, category)
    first = await place(stub, category, 30)
    second = await place(stub, category, 40, buyer="buyer-2")
    assert not second.batch_opened
    assert second.batch.batch_id == first.batch.batch_id
    assert second.batch.current_quantity == 70 and second.batch.order_count == 2


async def test_an_order_that_does_not_fit_opens_another_batch(stub):
    category = unique_category()
    await create_supplier(stub, category, capacity=100)
    first = await place(stub, category, 80)
    second = await place(stub, category, 30)
    assert second.batch_opened and second.batch.batch_id != first.batch.batch_id


async def test_style_limit_keeps_orders_apart(stub):
    category = unique_category()
    await create_supplier(stub, category, max_styles_per_batch=3)
    first = await place(stub, category, 10, styles=2)
    second = await place(stub, category, 10, styles=2)
    assert second.batch.batch_id != first.batch.batch_id


async def test_replayed_request_returns_the_first_answer_and_writes_nothing(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    rid = request_id()
    first = await place(stub, category, 10, rid=rid)
    replay = await place(stub, category, 10, rid=rid)
    assert replay == first
    assert counts(sql, category) == (1, 1, 1)


async def test_a_request_id_reused_for_another_request_is_rejected(stub):
    category = unique_category()
    await create_supplier(stub, category)
    rid = request_id()
    await place(stub, category, 10, rid=rid)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await place(stub, category, 11, rid=rid)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_concurrent_orders_never_overfill_and_every_order_counts_once(stub, sql):
    category = unique_category()
    await create_supplier(stub, category, moq=60, capacity=100)
    await create_supplier(stub, category, moq=80, capacity=150, price_tiers=[pb.PriceTier(min_quantity=1, unit_price="5.50")])
    rids = [request_id() for _ in range(32)]
    quantities = [7 + (i * 13) % 29 for i in range(32)]
    replies = await asyncio.gather(
        *(place(stub, category, q, buyer=f"b{i}", rid=rid) for i, (q, rid) in enumerate(zip(quantities, rids, strict=True)))
    )
    replays = await asyncio.gather(
        *(place(stub, category, q, buyer=f"b{i}", rid=rid) for i, (q, rid) in enumerate(zip(quantities, rids, strict=True)))
    )
    assert [r.order.order_id for r in replays] == [r.order.order_id for r in replies]
    assert len({r.order.order_id for r in replies}) == 32
    rows = sql.execute(
        """
        SELECT b.id, b.current_quantity, b.capacity, b.order_count, coalesce(sum(c.quantity), 0), count(c.id)
        FROM batch.batches b LEFT JOIN batch.contributions c ON c.batch_id = b.id
        WHERE b.category = %s GROUP BY b.id
        """,
        (category,),
    ).fetchall()
    for _, current, capacity, order_count, contributed, contributions in rows:
        assert current == contributed <= capacity
        assert order_count == contributions
    assert sum(r[1] for r in rows) == sum(quantities)
    stored = sql.execute("SELECT id::text FROM batch.orders WHERE category = %s", (category,)).fetchall()
    assert sorted(r[0] for r in stored) == sorted(r.order.order_id for r in replies)


INVALID_ORDERS = [
    (dict(quantity=0), "quantity"),
    (dict(quantity=-5), "quantity"),
    (dict(quantity=10**12), "quantity"),
    (dict(category="Not A Category"), "category"),
    (dict(style=pb.StyleDetails(style_count=0)), "style.style_count"),
    (dict(style=pb.StyleDetails(style_count=1, colors=["x"] * 101)), "style.colors"),
    (dict(request_id=""), "request_id"),
]


@pytest.mark.parametrize(("change", "field"), INVALID_ORDERS)
async def test_invalid_orders_are_rejected_with_the_field_and_nothing_written(stub, sql, change, field):
    category = unique_category()
    await create_supplier(stub, category)
    values = dict(request_id=request_id(), category=category, quantity=10, style=pb.StyleDetails(style_count=1))
    values.update(change)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(pb.PlaceOrderRequest(**values), metadata=auth("buyer", "b"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(raised.value)
    assert counts(sql, category) == (0, 0, 0)


async def test_unknown_category_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await place(stub, unique_category(), 10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "category" in field_violations(raised.value)


async def test_no_supplier_able_to_take_the_order_is_failed_precondition_and_nothing_written(stub, sql):
    category = unique_category()
    await create_supplier(stub, category, capacity=100)
    rid = request_id()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await place(stub, category, 101, rid=rid)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert counts(sql, category) == (0, 0, 0)
    assert sql.execute("SELECT count(*) FROM batch.idempotency_keys WHERE request_id = %s", (rid,)).fetchone()[0] == 0


async def test_buyers_cannot_place_or_read_for_someone_else(stub):
    category = unique_category()
    await create_supplier(stub, category)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlaceOrder(
            pb.PlaceOrderRequest(request_id=request_id(), buyer_id="other", category=category, quantity=1,
                                 style=pb.StyleDetails(style_count=1)),
            metadata=auth("buyer", "me"),
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    mine = await place(stub, category, 5, buyer="me")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetOrder(pb.GetOrderRequest(order_id=mine.order.order_id), metadata=auth("buyer", "intruder"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    own = await stub.GetOrder(pb.GetOrderRequest(order_id=mine.order.order_id), metadata=auth("buyer", "me"))
    assert own.order == mine.order


async def test_buyers_list_only_their_own_orders_page_by_page(stub):
    category = unique_category()
    await create_supplier(stub, category)
    buyer = f"lister-{uuid.uuid4().hex[:6]}"
    placed = [await place(stub, category, 1, buyer=buyer) for _ in range(5)]
    await place(stub, category, 1, buyer="someone-else")
    seen, token = [], ""
    while True:
        page = await stub.ListOrders(pb.ListOrdersRequest(page_size=2, page_token=token), metadata=auth("buyer", buyer))
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [p.order.order_id for p in reversed(placed)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListOrders(pb.ListOrdersRequest(buyer_id="someone-else"), metadata=auth("buyer", buyer))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_cancelling_an_order_gives_its_quantity_back(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    keep = await place(stub, category, 30)
    drop = await place(stub, category, 20, buyer="canceller")
    reply = await stub.CancelOrder(
        pb.CancelOrderRequest(request_id=request_id(), order_id=drop.order.order_id), metadata=auth("buyer", "canceller")
    )
    assert reply.order.status == pb.ORDER_STATUS_CANCELLED
    assert reply.batch.current_quantity == 30 and reply.batch.order_count == 1 and reply.batch.style_count == 1
    assert counts(sql, category) == (2, 1, 1)
    assert outbox_types(sql, drop.order.order_id)[-1] == "order.cancelled"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CancelOrder(
            pb.CancelOrderRequest(request_id=request_id(), order_id=drop.order.order_id), metadata=ADMIN
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert keep.batch.batch_id == reply.batch.batch_id


async def test_order_status_follows_the_workflow(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    order = (await place(stub, category, 5)).order

    async def move(status):
        return await stub.UpdateOrderStatus(
            pb.UpdateOrderStatusRequest(request_id=request_id(), order_id=order.order_id, status=status, reason="rule"),
            metadata=SERVICE,
        )

    assert (await move(pb.ORDER_STATUS_AWAITING_SUPPLIER)).order.status == pb.ORDER_STATUS_AWAITING_SUPPLIER
    for bad in (pb.ORDER_STATUS_DELIVERED, pb.ORDER_STATUS_REFUNDED):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await move(bad)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(pb.ORDER_STATUS_UNSPECIFIED)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert outbox_types(sql, order.order_id).count("order.status_changed") == 1


async def test_assign_supplier_to_an_order_respects_priority(stub, sql):
    category = unique_category()
    await create_supplier(stub, category)
    other = await create_supplier(stub, category, name="Other")
    order = (await place(stub, category, 5)).order

    async def assign(supplier_id, priority):
        return await stub.AssignSupplier(
            pb.AssignSupplierRequest(request_id=request_id(), order_id=order.order_id, supplier_id=supplier_id,
                                     priority=priority),
            metadata=SERVICE,
        )

    assert (await assign(other.supplier_id, 5)).order.supplier_id == other.supplier_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await assign(order.supplier_id, 1)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await assign(str(uuid.uuid4()), 9)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await assign("not-a-uuid", 9)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert outbox_types(sql, order.order_id).count("order.supplier_assigned") == 1


async def test_assign_supplier_to_a_whole_batch(stub):
    category = unique_category()
    await create_supplier(stub, category)
    other = await create_supplier(stub, category, name="Other")
    placed = await place(stub, category, 5)
    reply = await stub.AssignSupplier(
        pb.AssignSupplierRequest(request_id=request_id(), batch_id=placed.batch.batch_id, supplier_id=other.supplier_id),
        metadata=SERVICE,
    )
    assert reply.batch.supplier_id == other.supplier_id
    order = await stub.GetOrder(pb.GetOrderRequest(order_id=placed.order.order_id), metadata=ADMIN)
    assert order.order.supplier_id == other.supplier_id


async def test_supplier_crud_and_validation(stub):
    category = unique_category()
    created = await create_supplier(stub, category)
    assert created.price_tiers[1].unit_price == "5.00"
    updated = await stub.UpdateSupplier(
        pb.UpdateSupplierRequest(
            request_id=request_id(), supplier=pb.Supplier(supplier_id=created.supplier_id, rating=3.25, moq=150),
            update_mask={"paths": ["rating", "moq"]},
        ),
        metadata=ADMIN,
    )
    assert (updated.supplier.rating, updated.supplier.moq, updated.supplier.name) == (3.25, 150, created.name)
    listed = await stub.ListSuppliers(pb.ListSuppliersRequest(category=category), metadata=ADMIN)
    assert [s.supplier_id for s in listed.suppliers] == [created.supplier_id]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateSupplier(
            pb.UpdateSupplierRequest(request_id=request_id(), supplier=pb.Supplier(supplier_id=created.supplier_id, moq=500),
                                     update_mask={"paths": ["moq"]}),
            metadata=ADMIN,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "supplier.capacity" in field_violations(raised.value)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateSupplier(
            pb.CreateSupplierRequest(request_id=request_id(), supplier=supplier_message(category, moq=-1, rating=9)),
            metadata=ADMIN,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"supplier.moq", "supplier.rating"} <= set(field_violations(raised.value))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetSupplier(pb.GetSupplierRequest(supplier_id=str(uuid.uuid4())), metadata=ADMIN)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetSupplier(pb.GetSupplierRequest(supplier_id=created.supplier_id), metadata=auth("supplier", "other"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    own = await stub.GetSupplier(
        pb.GetSupplierRequest(supplier_id=created.supplier_id), metadata=auth("supplier", created.supplier_id)
    )
    assert own.supplier.name == created.name


async def test_recommend_supplier_names_the_best_fit_or_not_found(stub):
    category = unique_category()
    best = await create_supplier(stub, category, price_tiers=[pb.PriceTier(min_quantity=1, unit_price="3.10")])
    reply = await stub.RecommendSupplier(pb.RecommendSupplierRequest(category=category, quantity=10), metadata=SERVICE)
    assert reply.supplier.supplier_id == best.supplier_id and Decimal(reply.unit_price) == Decimal("3.10")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RecommendSupplier(pb.RecommendSupplierRequest(category=category, quantity=10_000), metadata=SERVICE)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_suppliers_see_only_their_own_batches(stub):
    category = unique_category()
    mine = await create_supplier(stub, category)
    placed = await place(stub, category, 5)
    as_supplier = auth("supplier", mine.supplier_id)
    listed = await stub.ListBatches(pb.ListBatchesRequest(), metadata=as_supplier)
    assert [b.batch_id for b in listed.batches] == [placed.batch.batch_id]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetBatch(pb.GetBatchRequest(batch_id=placed.batch.batch_id), metadata=auth("supplier", str(uuid.uuid4())))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetBatch(pb.GetBatchRequest(batch_id="nope"), metadata=ADMIN)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
