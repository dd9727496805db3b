"""The gateway over HTTP against a recording gRPC backend: what arrives, what comes back."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from loom.batch.v1 import batch_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2
from prometheus_client import REGISTRY

from libs.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.gateway.routes import Binding, build_table, resolve_field_path
from tests.gateway.support import gateway_settings, recording_backend, run_gateway
from tests.support import token

pytestmark = pytest.mark.timeout(60)

ADMIN = {"authorization": f"Bearer {token('admin')}"}


@pytest.fixture(scope="module")
async def backend():
    async with recording_backend() as running:
        yield running


@pytest.fixture(scope="module")
async def gateway(backend):
    targets = dict.fromkeys(("batch", "rules", "tracking", "scheduler"), backend.target)
    settings = gateway_settings(
        targets, cors_origins=["https://shop.example"], max_body_bytes=2048, trusted_proxies=["127.0.0.1/32"]
    )
    async with run_gateway(settings) as running:
        yield running


@pytest.fixture
async def http(gateway):
    async with gateway.client() as client:
        yield client


def _abort_with(error):
    async def behaviour(request, context):
        raise error

    return behaviour


async def test_path_variable_and_query_parameters_fill_the_request(backend, http):
    async def list_orders(request, context):
        return batch_pb2.ListOrdersResponse(next_page_token="next")

    backend.answer("ListOrders", list_orders)
    reply = await http.get(
        "/v1/orders", params={"status": "ORDER_STATUS_CONFIRMED", "pageSize": "5", "batch_id": "b 1"}, headers=ADMIN
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"orders": [], "nextPageToken": "next"}
    assert backend.last().request == batch_pb2.ListOrdersRequest(
        status=batch_pb2.ORDER_STATUS_CONFIRMED, page_size=5, batch_id="b 1"
    )


async def test_percent_encoded_path_variable_arrives_decoded(backend, http):
    async def get_batch(request, context):
        return batch_pb2.GetBatchResponse(batch=batch_pb2.Batch(batch_id=request.batch_id))

    backend.answer("GetBatch", get_batch)
    reply = await http.get("/v1/batches/a%2Fb%20c", headers=ADMIN)
    assert reply.status_code == 200, reply.text
    assert backend.last().request.batch_id == "a/b c"


async def test_body_field_binding_and_nested_path_variable(backend, http):
    async def update_supplier(request, context):
        return batch_pb2.UpdateSupplierResponse(supplier=request.supplier)

    backend.answer("UpdateSupplier", update_supplier)
    reply = await http.patch("/v1/suppliers/s-1?updateMask=name,moq", json={"name": "Mill", "moq": "200"}, headers=ADMIN)
    assert reply.status_code == 200, reply.text
    request = backend.last().request
    assert request.supplier.supplier_id == "s-1" and request.supplier.name == "Mill" and request.supplier.moq == 200
    assert list(request.update_mask.paths) == ["name", "moq"]


async def test_response_uses_canonical_json(backend, http):
    async def get_batch(request, context):
        batch = batch_pb2.Batch(
            batch_id="b1", status=batch_pb2.BATCH_STATUS_FILLING, current_quantity=2**40, fill_percentage=12.5
        )
        batch.create_time.FromJsonString("2024-05-01T12:00:00Z")
        return batch_pb2.GetBatchResponse(batch=batch)

    backend.answer("GetBatch", get_batch)
    body = (await http.get("/v1/batches/b1", headers=ADMIN)).json()["batch"]
    assert body["batchId"] == "b1"
    assert body["status"] == "BATCH_STATUS_FILLING"
    assert body["currentQuantity"] == str(2**40)
    assert body["createTime"] == "2024-05-01T12:00:00Z"
    assert body["fillPercentage"] == 12.5


async def test_identity_request_id_client_ip_and_deadline_are_forwarded(backend, http):
    async def get_batch(request, context):
        return batch_pb2.GetBatchResponse()

    backend.answer("GetBatch", get_batch)
    reply = await http.get(
        "/v1/batches/b1",
        headers={**ADMIN, "x-request-id": "req-123", "x-forwarded-for": "203.0.113.7", "grpc-timeout": "3S"},
    )
    assert reply.headers["x-request-id"] == "req-123"
    received = backend.last()
    assert received.metadata["authorization"] == ADMIN["authorization"]
    assert received.metadata["x-request-id"] == "req-123"
    # The test client connects from 127.0.0.1, a trusted proxy, so its X-Forwarded-For is believed.
    assert received.metadata["x-forwarded-for"] == "203.0.113.7"
    assert 2.0 < received.deadline_seconds <= 3.1  # gRPC rounds deadlines up a little


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(backend, gateway):
    settings = gateway.settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
    async def get_batch(request, context):
        return batch_pb2.GetBatchResponse()

    backend.answer("GetBatch", get_batch)
    async with run_gateway(settings) as untrusting, untrusting.client() as client:
        await client.get("/v1/batches/b1", headers={**ADMIN, "x-forwarded-for": "203.0.113.7"})
    assert backend.last().metadata["x-forwarded-for"] == "127.0.0.1"


async def test_request_id_is_generated_when_absent_and_default_deadline_applies(backend, http, gateway):
    async def get_batch(request, context):
        return batch_pb2.GetBatchResponse()

    backend.answer("GetBatch", get_batch)
    reply = await http.get("/v1/batches/b1", headers=ADMIN)
    generated = reply.headers["x-request-id"]
    assert len(generated) >= 16
    assert backend.last().metadata["x-request-id"] == generated
    assert backend.last().deadline_seconds <= gateway.settings.default_deadline_seconds + 0.1


async def test_user_agent_fills_empty_interaction_user_agent(backend, http):
    async def track(request, context):
        return tracking_pb2.TrackInteractionResponse(interaction_id="i1")

    backend.answer("TrackInteraction", track)
    body = {"interaction": {"type": "INTERACTION_TYPE_HOVER", "productId": "p1", "sessionId": "s1"}}
    reply = await http.post("/v1/interactions", json=body, headers={"user-agent": "Mozilla/5.0 Test"})
    assert reply.status_code == 200, reply.text
    assert backend.last().request.interaction.user_agent == "Mozilla/5.0 Test"
    assert "authorization" not in backend.last().metadata


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quantity": "many"}, "quantity"),
        ({"quantity": 1.5}, "quantity"),
        ({"category": 7}, "category"),
        ({"colour": "red"}, "colour"),
        ({"style": {"colors": [1]}}, "style.colors"),
        ({"style": {"shade": "red"}}, "style.shade"),
        ({"style": "plain"}, "style"),
    ],
)
async def test_bad_body_is_400_naming_the_field_and_never_reaches_the_backend(backend, http, body, field):
    before = len(backend.received)
    reply = await http.post("/v1/orders", json=body, headers=ADMIN)
    assert reply.status_code == 400
    error = reply.json()
    assert error["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert error["details"][0]["fieldViolations"][0]["field"] == field
    assert len(backend.received) == before


WRONG_JSON = {
    "string": [5, True, {}, []],
    "bool": ["true", 1, {}],
    "integer": ["ten", 1.5, True, {}, [1]],
    "double": ["fast", True, {}],
    "enum": [3.5, 99999, "NOT_A_VALUE", "1", True, {}],
    "message": ["text", 5, []],
    "repeated": ["not a list", 5, {}],
}
WELL_KNOWN_WRONG = {
    "google.protobuf.Timestamp": ["yesterday", 5, {}],
    "google.protobuf.FieldMask": [5, True],
    "google.protobuf.Struct": ["text", 5, []],
}


def _kind(field: FieldDescriptor) -> str | None:
    if field.is_repeated:
        return "repeated"
    if field.enum_type is not None:
        return "enum"
    if field.message_type is not None:
        name = field.message_type.full_name
        return name if name in WELL_KNOWN_WRONG else "message" if not name.startswith("google.") else None
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "bool"
    if field.type == FieldDescriptor.TYPE_STRING:
        return "string"
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return "double"
    return "integer" if field.type != FieldDescriptor.TYPE_BYTES else None


def _body_fields() -> list[tuple[Binding, FieldDescriptor, str]]:
    """One case per field of every JSON body message, with the binding that takes it."""
    cases, seen = [], set()
    for binding in build_table().bindings:
        if not binding.body:
            continue
        message = binding.rpc.descriptor.input_type
        if binding.body != "*":
            message = resolve_field_path(message, binding.body)[-1].message_type
        for field in message.fields:
            kind = _kind(field)
            if kind is not None and (message.full_name, field.name) not in seen:
                seen.add((message.full_name, field.name))
                cases.append((binding, field, kind))
    return cases


def _concrete_path(binding: Binding) -> str:
    path = binding.template.template
    for variable in binding.template.variables:
        path = re.sub(r"\{" + re.escape(variable) + r"(=[^}]*)?\}", "x1", path)
    return path


@pytest.mark.parametrize(
    ("binding", "field", "kind"), _body_fields(), ids=lambda v: v.name if isinstance(v, FieldDescriptor) else None
)
async def test_a_wrong_json_type_for_any_body_field_is_400_naming_it(backend, http, binding, field, kind):
    prefix = "" if binding.body == "*" else f"{binding.body}."
    for wrong in WRONG_JSON.get(kind) or WELL_KNOWN_WRONG[kind]:
        before = len(backend.received)
        reply = await http.request(
            binding.http_method, _concrete_path(binding), json={field.json_name: wrong}, headers=ADMIN
        )
        assert reply.status_code == 400, (wrong, reply.text)
        assert reply.json()["details"][0]["fieldViolations"][0]["field"] == prefix + field.json_name, wrong
        assert len(backend.received) == before


def _query_enums() -> list[tuple[Binding, FieldDescriptor]]:
    return [
        (binding, field)
        for binding in build_table().bindings
        if binding.http_method == "GET" and not binding.rpc.server_streaming
        for field in binding.rpc.descriptor.input_type.fields
        if field.enum_type is not None and field.name not in binding.template.variables
    ]


@pytest.mark.parametrize(("binding", "field"), _query_enums(), ids=lambda v: v.name if isinstance(v, FieldDescriptor) else None)
async def test_an_enum_query_parameter_naming_no_value_is_400(backend, http, binding, field):
    for wrong in ("3.5", "99999", "NOT_A_VALUE", "true"):
        before = len(backend.received)
        reply = await http.get(_concrete_path(binding), params={field.json_name: wrong}, headers=ADMIN)
        assert reply.status_code == 400, (wrong, reply.text)
        assert reply.json()["details"][0]["fieldViolations"][0]["field"] == field.json_name
        assert len(backend.received) == before


async def test_malformed_json_is_400(http):
    reply = await http.post("/v1/orders", content=b'{"quantity": ', headers={**ADMIN, "content-type": "application/json"})
    assert reply.status_code == 400
    assert "malformed JSON" in reply.json()["message"]


async def test_bad_query_parameter_is_400_naming_it(http):
    for params, field in (({"pageSize": "ten"}, "pageSize"), ({"colour": "red"}, "colour"), ({"status": "LOST"}, "status")):
        reply = await http.get("/v1/orders", params=params, headers=ADMIN)
        assert reply.status_code == 400, params
        assert reply.json()["details"][0]["fieldViolations"][0]["field"] == field


async def test_oversized_body_is_413(http):
    reply = await http.post("/v1/orders", json={"category": "x" * 4096}, headers=ADMIN)
    assert reply.status_code == 413
    assert reply.json()["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_non_json_body_is_415(http):
    reply = await http.post("/v1/orders", content=b"quantity=1", headers={**ADMIN, "content-type": "text/plain"})
    assert reply.status_code == 415


async def test_unknown_route_is_404_and_wrong_method_is_405(http):
    missing = await http.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    wrong = await http.put("/v1/orders")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "POST"}


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
async def test_grpc_status_maps_to_http_status(backend, http, code, http_status):
    async def fail(request, context):
        await context.abort(code, f"it failed with {code.name}")

    backend.answer("GetJob", fail)
    reply = await http.get("/v1/jobs/nightly", headers=ADMIN)
    assert reply.status_code == http_status
    assert reply.json() == {"code": code.value[0], "message": f"it failed with {code.name}", "details": []}


async def test_domain_error_details_reach_the_client(backend, http):
    backend.answer("PlaceOrder", _abort_with(InvalidArgument.field("quantity", "must be positive")))
    reply = await http.post("/v1/orders", json={"quantity": "0"}, headers=ADMIN)
    assert reply.status_code == 400
    assert reply.json()["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "quantity", "description": "must be positive"}],
        }
    ]
    backend.answer("GetBatch", _abort_with(NotFound("batch", "b9")))
    missing = await http.get("/v1/batches/b9", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["details"][0]["resourceName"] == "b9"
    backend.answer("AdvanceBatch", _abort_with(FailedPrecondition("batch is filling", reason="BATCH_NOT_CONFIRMED")))
    state = await http.post("/v1/batches/b9:advance", json={}, headers=ADMIN)
    assert state.status_code == 400
    assert {d["@type"].rsplit(".", 1)[-1] for d in state.json()["details"]} == {"PreconditionFailure", "ErrorInfo"}


async def test_resource_exhausted_carries_retry_after_rounded_up(backend, http):
    backend.answer("TrackShare", _abort_with(ResourceExhausted("10 shares per hour", retry_after_seconds=41.2)))
    reply = await http.post("/v1/posts/p1/shares", json={"platform": "SHARE_PLATFORM_LINKEDIN"})
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "42"
    retry = next(d for d in reply.json()["details"] if d["@type"].endswith("RetryInfo"))
    assert retry["retryDelay"] == "41.200s"


async def test_unreachable_backend_is_503(gateway):
    settings = gateway.settings.model_copy(update={"batch_target": "127.0.0.1:1"})
    async with run_gateway(settings) as broken, broken.client() as client:
        reply = await client.get("/v1/batches/b1", headers={**ADMIN, "grpc-timeout": "2S"})
    assert reply.status_code == 503
    assert reply.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]


async def test_bad_grpc_timeout_header_is_400(http):
    reply = await http.get("/v1/batches/b1", headers={**ADMIN, "grpc-timeout": "soon"})
    assert reply.status_code == 400
    assert reply.json()["details"][0]["fieldViolations"][0]["field"] == "Grpc-Timeout"


async def test_cors_preflight_allows_configured_origin_only(http):
    allowed = await http.options(
        "/v1/orders",
        headers={"origin": "https://shop.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"},
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    refused = await http.options(
        "/v1/orders", headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in refused.headers


async def test_server_streaming_rpc_is_served_as_server_sent_events(backend, http):
    async def watch(request, context):
        for quantity in (10, 20):
            yield batch_pb2.WatchBatchResponse(batch=batch_pb2.Batch(batch_id=request.batch_id, current_quantity=quantity))

    backend.answer("WatchBatch", watch)
    async with http.stream("GET", "/v1/batches/b1:watch", headers=ADMIN) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in reply.aiter_text()])
    events = [block for block in text.split("\n\n") if block]
    data = [json.loads(e.removeprefix("data: ")) for e in events if e.startswith("data: ")]
    assert [d["batch"]["currentQuantity"] for d in data] == ["10", "20"]
    assert events[-1].startswith("event: end")


async def test_stream_failing_before_its_first_event_gets_its_http_status(backend, http):
    async def watch(request, context):
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such batch")
        yield  # pragma: no cover - makes this an async generator

    backend.answer("WatchBatch", watch)
    reply = await http.get("/v1/batches/gone:watch", headers=ADMIN)
    assert reply.status_code == 404
    assert reply.json()["message"] == "no such batch"


async def test_stream_failing_midway_sends_an_error_event(backend, http):
    async def watch(request, context):
        yield scheduler_pb2.WatchJobRunsResponse()
        await context.abort(grpc.StatusCode.DATA_LOSS, "run log unreadable")

    backend.answer("WatchJobRuns", watch)
    async with http.stream("GET", "/v1/jobRuns:watch", headers=ADMIN) as reply:
        text = "".join([chunk async for chunk in reply.aiter_text()])
    error_block = next(b for b in text.split("\n\n") if b.startswith("event: error"))
    assert json.loads(error_block.split("data: ", 1)[1])["code"] == grpc.StatusCode.DATA_LOSS.value[0]


async def test_client_disconnect_cancels_the_backend_stream(backend, http):
    cancelled = asyncio.Event()

    async def watch(request, context):
        try:
            yield scheduler_pb2.WatchJobRunsResponse()
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    backend.answer("WatchJobRuns", watch)
    async with http.stream("GET", "/v1/jobRuns:watch", headers=ADMIN) as reply:
        async for _ in reply.aiter_text():
            break
    await asyncio.wait_for(cancelled.wait(), timeout=10)


async def test_openapi_document_describes_every_route(gateway, http):
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert "post" in document["paths"]["/v1/orders"]
    assert "get" in document["paths"]["/v1/batches/{batch_id}:watch"]
    assert document["components"]["schemas"]["google.rpc.Status"]["required"] == ["code", "message", "details"]



async def test_admin_console_is_served_by_the_gateway(http):
    reply = await http.get("/console/", follow_redirects=True)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")


async def test_a_control_character_in_a_path_variable_still_gets_a_json_answer(backend, http):
    async def get_batch(request, context):
        raise NotFound("batch", request.batch_id)

    backend.answer("GetBatch", get_batch)
    reply = await http.get("/v1/batches/a%0Ab", headers=ADMIN)
    assert reply.status_code == 404
    assert reply.json()["details"][0]["resourceName"] == "a\nb"


async def test_requests_are_counted_by_route_template_and_status(backend, http):
    async def get_batch(request, context):
        return batch_pb2.GetBatchResponse()

    backend.answer("GetBatch", get_batch)
    labels = {"method": "GET", "route": "/v1/batches/{batch_id}", "status": "200"}
    before = REGISTRY.get_sample_value("loom_gateway_requests_total", labels) or 0
    await http.get("/v1/batches/b-counted", headers=ADMIN)
    assert REGISTRY.get_sample_value("loom_gateway_requests_total", labels) == before + 1
