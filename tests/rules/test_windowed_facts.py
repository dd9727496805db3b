"""Windowed facts: declared in the vocabulary, fetched once per evaluation from their owning service,
and served by batch and tracking from their own data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.tracking.v1 import tracking_pb2

from tests.rules.conftest import ADMIN, SERVICE, action, create, event, rule_message
from tests.support import auth, serve, stub_for

RUN_JOB = action("trigger_workflow", job="loyal", params={"orders": "{{window.buyer_orders_24h}}"})


async def test_a_windowed_fact_is_fetched_once_per_evaluation_however_many_rules_name_it(rules, peers):
    peers.batch.recent_orders = 4
    loyal = await create(rules, rule_message("loyal", conditions={"window.buyer_orders_24h": ">= 3"}, actions=[RUN_JOB]))
    await create(rules, rule_message("very loyal", conditions={"window.buyer_orders_24h": ">= 10"}, actions=[RUN_JOB]))
    sample = event("order.placed", order={"id": "o-w", "buyer_id": "buyer-7"})
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample, dry_run=True), metadata=ADMIN)
    assert [t.rule_id for t in reply.rules if t.matched] == [loyal.rule_id]
    assert json_format.MessageToDict(reply.fetched_facts) == {"window": {"buyer_orders_24h": 4}}
    (asked,) = peers.batch.requests("CountRecentOrders")
    assert asked.buyer_id == "buyer-7"
    since = asked.start_time.ToDatetime(tzinfo=UTC)
    assert timedelta(hours=23, minutes=59) < datetime.now(UTC) - since < timedelta(hours=24, minutes=1)
    (matched,) = [t for t in reply.rules if t.matched]
    assert json_format.MessageToDict(matched.actions[0].params) == {"job": "loyal", "params": {"orders": 4}}


async def test_a_tracking_window_is_asked_of_tracking_from_midnight(rules, peers):
    peers.tracking.interactions = 120
    rule = await create(rules, rule_message(conditions={"window.product_interactions_today": "> 100"}, actions=[RUN_JOB]))
    sample = event("order.placed", order={"id": "o-p", "buyer_id": "b"}, product={"id": "tee-1"})
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample, dry_run=True), metadata=ADMIN)
    assert [t.rule_id for t in reply.rules if t.matched] == [rule.rule_id]
    (asked,) = peers.tracking.asked
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert (asked.product_id, asked.start_time.ToDatetime(tzinfo=UTC)) == ("tee-1", midnight)


async def test_an_event_without_the_key_fetches_nothing_and_does_not_match(rules, peers):
    await create(rules, rule_message(conditions={"window.buyer_orders_24h": ">= 0"}, actions=[RUN_JOB]))
    reply = await rules.EvaluateEvent(
        rules_pb2.EvaluateEventRequest(event=event("batch.confirmed"), dry_run=True), metadata=ADMIN
    )
    assert not any(t.matched for t in reply.rules) and peers.batch.requests("CountRecentOrders") == []


async def test_an_unknown_windowed_fact_is_refused_on_save(rules):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(rules, rule_message(conditions={"window.orders_forever": "> 1"}, actions=[RUN_JOB]))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown field 'orders_forever' of 'window'" in failure.value.details()


# --- the owning services' read RPCs, on their own data --------------------------------------


async def test_batch_counts_a_buyers_recent_orders(database_url):
    category, buyer = f"cat_{uuid.uuid4().hex[:8]}", f"buyer-{uuid.uuid4().hex[:6]}"
    async with serve("batch", database_url, outbox_dispatch=False) as running, stub_for("batch", running.target) as stub:
        supplier = batch_pb2.Supplier(
            name="Acme", categories=[category], moq=100, capacity=200, lead_time_days=10, rating=4.5, active=True,
            max_styles_per_batch=10, contact_email="ops@acme.example",
            price_tiers=[batch_pb2.PriceTier(min_quantity=1, unit_price="6.00")],
        )
        await stub.CreateSupplier(batch_pb2.CreateSupplierRequest(request_id=uuid.uuid4().hex, supplier=supplier), metadata=ADMIN)
        for _ in range(2):
            await stub.PlaceOrder(
                batch_pb2.PlaceOrderRequest(request_id=uuid.uuid4().hex, category=category, quantity=5,
                                            style=batch_pb2.StyleDetails(style_count=1, colors=["black"], sizes=["M"])),
                metadata=auth("buyer", buyer),
            )
        since = datetime.now(UTC) - timedelta(hours=24)
        request = batch_pb2.CountRecentOrdersRequest(buyer_id=buyer)
        request.start_time.FromDatetime(since)
        assert (await stub.CountRecentOrders(request, metadata=SERVICE)).count == 2
        request.start_time.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))
        assert (await stub.CountRecentOrders(request, metadata=SERVICE)).count == 0
        confirmed = batch_pb2.CountConfirmedBatchesRequest(category=category)
        confirmed.start_time.FromDatetime(since)
        assert (await stub.CountConfirmedBatches(confirmed, metadata=SERVICE)).count == 0
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.CountRecentOrders(batch_pb2.CountRecentOrdersRequest(), metadata=SERVICE)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tracking_counts_a_products_interactions_since_a_time(database_url):
    product = f"p-{uuid.uuid4().hex[:8]}"
    async with serve("tracking", database_url) as running, stub_for("tracking", running.target) as stub:
        for i in range(3):
            item = tracking_pb2.Interaction(
                type=tracking_pb2.INTERACTION_TYPE_VIEW_DETAILS, product_id=product, session_id=f"s-{i}"
            )
            await stub.TrackInteraction(tracking_pb2.TrackInteractionRequest(interaction=item))
        request = tracking_pb2.CountProductInteractionsRequest(product_id=product)
        request.start_time.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
        assert (await stub.CountProductInteractions(request, metadata=SERVICE)).count == 3
