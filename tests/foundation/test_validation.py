"""Constraints declared in the protos (buf.validate) are enforced before any servicer runs.

Each kind of constraint is sent over gRPC to the real batch service on real PostgreSQL:
the answer is INVALID_ARGUMENT naming the field as the services name fields, and
nothing is written. A probe servicer shows the bad request never reaches the handler.
"""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from loom.batch.v1 import batch_pb2 as pb
from loom.batch.v1 import batch_pb2_grpc
from loom.tracking.v1 import tracking_pb2

from libs import validation
from libs.bootstrap import ServiceSpec, start
from libs.errors import field_violations
from libs.scratch_db import plain_url
from services.batch.settings import BatchSettings
from tests.support import auth, serve, settings_for, stub_for

ADMIN = auth("admin")
COUNT_SUPPLIERS = "SELECT count(*) FROM batch.suppliers"


@pytest.fixture(scope="module")
async def batch(database_url):
    async with serve("batch", database_url) as running, stub_for("batch", running.target) as stub:
        yield stub


@pytest.fixture
def sql(database_url):
    with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
        yield conn


def order(**changes) -> pb.PlaceOrderRequest:
    values = dict(
        request_id=uuid.uuid4().hex, category=f"cat_{uuid.uuid4().hex[:10]}", quantity=10,
        style=pb.StyleDetails(style_count=1, colors=["black"]),
    )
    return pb.PlaceOrderRequest(**{**values, **changes})


def orders_in(sql, category: str) -> int:
    return sql.execute("SELECT count(*) FROM batch.orders WHERE category = %s", (category,)).fetchone()[0]


async def rejected(call) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(raised.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(request_id="r" * 129), "request_id"),  # string max_len
        (dict(request_id=""), "request_id"),  # string min_len (a required key)
        (dict(category="Not A Category"), "category"),  # string pattern
        (dict(quantity=0), "quantity"),  # integer range (gt)
        (dict(style=pb.StyleDetails(style_count=1001)), "style.style_count"),  # nested range
        (dict(style=pb.StyleDetails(style_count=1, colors=["x"] * 101)), "style.colors"),  # repeated max_items
        (dict(style=pb.StyleDetails(style_count=1, sizes=["M", ""])), "style.sizes[1]"),  # repeated items
        (dict(style=pb.StyleDetails(style_count=1, notes="n" * 2001)), "style.notes"),
    ],
    ids=["max_len", "min_len", "pattern", "range", "nested_range", "max_items", "items", "notes_max_len"],
)
async def test_a_broken_constraint_is_invalid_argument_naming_the_field_and_writes_nothing(batch, sql, change, field):
    request = order(**change)
    violations = await rejected(batch.PlaceOrder(request, metadata=auth("buyer", "b")))
    assert field in violations
    assert orders_in(sql, request.category) == 0


async def test_a_required_message_field_must_be_present(batch, sql):
    before = sql.execute(COUNT_SUPPLIERS).fetchone()[0]
    violations = await rejected(batch.CreateSupplier(pb.CreateSupplierRequest(request_id="r-1"), metadata=ADMIN))
    assert set(violations) == {"supplier"}
    assert sql.execute(COUNT_SUPPLIERS).fetchone()[0] == before


async def test_a_uuid_field_refuses_anything_else_in_the_services_own_words(batch):
    assert await rejected(batch.GetOrder(pb.GetOrderRequest(order_id="nope"), metadata=ADMIN)) == {
        "order_id": "must be a UUID"
    }


async def test_an_enum_must_be_a_declared_value_other_than_unspecified(batch):
    request = pb.ResolveReviewRequest(request_id="r-2", batch_id=str(uuid.uuid4()), decision=pb.REVIEW_DECISION_UNSPECIFIED)
    assert set(await rejected(batch.ResolveReview(request, metadata=ADMIN))) == {"decision"}


async def test_a_repeated_field_needs_its_minimum_of_items(batch):
    assert set(await rejected(batch.EstimateCost(pb.EstimateCostRequest(), metadata=ADMIN))) == {"line_items"}


async def test_every_violation_of_a_request_is_reported_at_once(batch, sql):
    request = order(request_id="", category="X", quantity=-1, style=pb.StyleDetails(style_count=0))
    violations = await rejected(batch.PlaceOrder(request, metadata=auth("buyer", "b")))
    assert set(violations) == {"request_id", "category", "quantity", "style.style_count"}
    assert orders_in(sql, "X") == 0


class CountingServicer(batch_pb2_grpc.BatchServiceServicer):
    calls = 0

    async def GetBatch(self, request, context):
        CountingServicer.calls += 1
        return pb.GetBatchResponse(batch=pb.Batch(batch_id=request.batch_id))


async def _count_calls(context) -> None:
    batch_pb2_grpc.add_BatchServiceServicer_to_server(CountingServicer(), context.server)


async def test_a_request_that_breaks_a_constraint_never_reaches_the_servicer():
    spec = ServiceSpec(name="batch", settings_class=BatchSettings, grpc_services=("loom.batch.v1.BatchService",),
                       setup=_count_calls, uses_database=False)
    running = await start(spec, settings_for("batch", database_url=None), port=0)
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            await rejected(stub.GetBatch(pb.GetBatchRequest(batch_id="b9"), metadata=ADMIN))
            assert CountingServicer.calls == 0
            good = str(uuid.uuid4())
            assert (await stub.GetBatch(pb.GetBatchRequest(batch_id=good), metadata=ADMIN)).batch.batch_id == good
            assert CountingServicer.calls == 1
    finally:
        await running.stop(grace=0)


def test_items_of_a_batch_call_are_left_to_the_per_item_results():
    """TrackInteractions answers per item; one bad interaction must not fail the others."""
    bad_item = tracking_pb2.Interaction(type=tracking_pb2.INTERACTION_TYPE_HOVER, product_id="bad id!", session_id="s")
    assert validation.violations(tracking_pb2.TrackInteractionsRequest(interactions=[bad_item])) == []
    assert [v.field for v in validation.violations(tracking_pb2.TrackInteractionsRequest())] == ["interactions"]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (dict(event_id="e-nul-1", type="order.placed", source="x\x00"), "event.source"),  # declared: string not_contains
        (dict(event_id="e-nul-2", type="order.placed", data={"order": {"id\x00": "1"}}), "event.data"),  # in the domain
    ],
    ids=["declared", "domain"],
)
async def test_an_event_holding_a_nul_character_is_invalid_and_not_stored(database_url, sql, event, field):
    from google.protobuf import json_format
    from loom.common.v1 import event_pb2
    from loom.rules.v1 import rules_pb2

    message = event_pb2.Event(**{k: v for k, v in event.items() if k != "data"})
    json_format.ParseDict(event.get("data", {}), message.data)
    async with serve("rules", database_url) as running, stub_for("rules", running.target) as rules:
        request = rules_pb2.EvaluateEventRequest(event=message)
        assert field in await rejected(rules.EvaluateEvent(request, metadata=ADMIN))
    stored = sql.execute("SELECT count(*) FROM rules.events WHERE event_id = %s", (event["event_id"],)).fetchone()[0]
    assert stored == 0
