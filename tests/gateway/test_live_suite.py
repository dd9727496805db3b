"""The gateway in front of the real services (real PostgreSQL, real gRPC, real auth).

Services land in parallel: an RPC that is not implemented yet answers
UNIMPLEMENTED over gRPC, which the gateway must turn into 501; the same tests
then compare real answers as soon as the RPC exists.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2

from libs.clients import STUBS, open_channel
from libs.settings import SERVICE_NAMES
from services.gateway.routes import build_table
from services.gateway.status import HTTP_STATUS
from tests.gateway.support import gateway_settings, run_gateway
from tests.support import auth, serve, token

pytestmark = pytest.mark.timeout(300)

SHARE_LIMIT = 3


@pytest.fixture(scope="module")
async def suite(database_url):
    """Every service in-process on its own port, and the gateway in front of them."""
    async with AsyncExitStack() as stack:
        overrides = {"tracking": {"share_limit_per_hour": SHARE_LIMIT}}
        running = {
            name: await stack.enter_async_context(serve(name, database_url, **overrides.get(name, {})))
            for name in SERVICE_NAMES
        }
        targets = {name: service.target for name, service in running.items()}
        gateway = await stack.enter_async_context(run_gateway(gateway_settings(targets)))
        channels = {name: open_channel(target) for name, target in targets.items()}
        stack.push_async_callback(lambda: asyncio.gather(*(c.close() for c in channels.values())))
        yield gateway, {name: STUBS[name](channel) for name, channel in channels.items()}


@pytest.fixture
async def http(suite):
    async with suite[0].client() as client:
        yield client


@pytest.fixture
def stubs(suite):
    return suite[1]


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {token('admin')}"}


async def assert_http_equals_grpc(http_reply, grpc_call) -> None:
    """The HTTP answer is the gRPC answer: same JSON, or same status code and message."""
    try:
        reply = await grpc_call
    except grpc.aio.AioRpcError as error:
        assert http_reply.status_code == HTTP_STATUS[error.code()], http_reply.text
        assert http_reply.json()["code"] == error.code().value[0]
        assert http_reply.json()["message"] == error.details()
        return
    assert http_reply.status_code == 200, http_reply.text
    assert http_reply.json() == json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)


async def create_supplier(http, category: str):
    """CreateSupplier over HTTP: the supplier JSON is the body, the idempotency key a query parameter."""
    supplier = {"name": f"{category} mill", "categories": [category], "moq": "100", "capacity": "500",
                "priceTiers": [{"minQuantity": "1", "unitPrice": "4.50"}], "leadTimeDays": 10, "rating": 4.5,
                "active": True, "maxStylesPerBatch": 3, "contactEmail": "mill@example.com"}
    return await http.post(f"/v1/suppliers?requestId={uuid.uuid4()}", json=supplier, headers=admin_headers())


async def test_batch_over_http_equals_grpc(http, stubs):
    created = await create_supplier(http, "t_shirts")
    if created.status_code == 200:
        supplier_id = created.json()["supplier"]["supplierId"]
        await assert_http_equals_grpc(
            await http.get(f"/v1/suppliers/{supplier_id}", headers=admin_headers()),
            stubs["batch"].GetSupplier(batch_pb2.GetSupplierRequest(supplier_id=supplier_id), metadata=auth("admin")),
        )
    else:
        assert created.status_code == 501, created.text
    await assert_http_equals_grpc(
        await http.get("/v1/suppliers", params={"category": "t_shirts"}, headers=admin_headers()),
        stubs["batch"].ListSuppliers(batch_pb2.ListSuppliersRequest(category="t_shirts"), metadata=auth("admin")),
    )


async def test_rules_over_http_equals_grpc(http, stubs):
    await assert_http_equals_grpc(
        await http.get("/v1/rules", params={"pageSize": "10"}, headers=admin_headers()),
        stubs["rules"].ListRules(rules_pb2.ListRulesRequest(page_size=10), metadata=auth("admin")),
    )


async def test_tracking_over_http_equals_grpc(http, stubs):
    post = {"title": "Gateway launch", "url": "https://example.com/launch", "published": True}
    created = await http.post(f"/v1/posts?requestId={uuid.uuid4()}", json=post, headers=admin_headers())
    assert created.status_code in (200, 501), created.text
    post_id = created.json()["post"]["postId"] if created.status_code == 200 else "missing"
    await assert_http_equals_grpc(
        await http.get(f"/v1/posts/{post_id}", headers=admin_headers()),
        stubs["tracking"].GetPost(tracking_pb2.GetPostRequest(post_id=post_id), metadata=auth("admin")),
    )


async def test_scheduler_over_http_equals_grpc(http, stubs):
    await assert_http_equals_grpc(
        await http.get("/v1/jobs", headers=admin_headers()),
        stubs["scheduler"].ListJobs(scheduler_pb2.ListJobsRequest(), metadata=auth("admin")),
    )


@pytest.mark.parametrize("wrong", [3.5, 99, "INTERACTION_TYPE_NOPE"])
async def test_an_enum_naming_no_value_is_refused_naming_the_field_over_http(http, wrong):
    interaction = {"type": wrong, "productId": "p1", "sessionId": "s1"}
    reply = await http.post("/v1/interactions", json={"interaction": interaction})
    assert reply.status_code == 400, reply.text
    assert reply.json()["details"][0]["fieldViolations"][0]["field"] == "interaction.type"


async def test_an_enum_naming_no_value_is_refused_naming_the_field_over_grpc(stubs):
    # Over gRPC only an undefined number can be sent (3.5 and names do not exist in binary).
    request = tracking_pb2.TrackInteractionRequest(
        interaction=tracking_pb2.Interaction(type=99, product_id="p1", session_id="s1")
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs["tracking"].TrackInteraction(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = next(status_pb2.Status.FromString(v) for k, v in refused.value.trailing_metadata() if k.endswith("-bin"))
    violations = error_details_pb2.BadRequest()
    assert next(d for d in status.details if d.Is(violations.DESCRIPTOR)).Unpack(violations)
    assert [v.field for v in violations.field_violations] == ["interaction.type"]


async def test_missing_or_invalid_token_is_401_and_wrong_role_is_403(http):
    missing = await http.get("/v1/rateLimits/stats")
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    invalid = await http.get("/v1/rateLimits/stats", headers={"authorization": "Bearer not-a-jwt"})
    assert invalid.status_code == 401
    wrong_role = await http.get("/v1/rateLimits/stats", headers={"authorization": f"Bearer {token('buyer')}"})
    assert wrong_role.status_code == 403
    assert wrong_role.json()["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]


async def test_rate_limited_share_is_429_with_retry_after(http):
    created = await http.post(f"/v1/posts?requestId={uuid.uuid4()}",
                              json={"title": "Shared", "url": "https://example.com/s", "published": True},
                              headers=admin_headers())
    assert created.status_code == 200, created.text
    post_id = created.json()["post"]["postId"]
    # The client's address arrives through a trusted proxy (loopback), so the limit is this IP's alone.
    client = {"x-forwarded-for": f"198.51.100.{uuid.uuid4().int % 250 + 1}"}
    for _ in range(SHARE_LIMIT):
        shared = await http.post(f"/v1/posts/{post_id}/shares", json={"platform": "SHARE_PLATFORM_LINKEDIN"}, headers=client)
        assert shared.status_code == 200, shared.text
    limited = await http.post(f"/v1/posts/{post_id}/shares", json={"platform": "SHARE_PLATFORM_LINKEDIN"}, headers=client)
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in limited.json()["details"])


async def _implemented_operations(targets: dict[str, str]) -> tuple[set[str], set[str]]:
    """Operation ids whose RPC a backend serves, and those it answers UNIMPLEMENTED.

    Probed with an invalid token: a served method fails UNAUTHENTICATED before
    its handler runs, so probing changes nothing.
    """
    served, missing = set(), set()
    for binding in build_table().bindings:
        rpc = binding.rpc
        async with grpc.aio.insecure_channel(targets[rpc.backend]) as channel:
            make = channel.unary_stream if rpc.server_streaming else channel.unary_unary
            call = make(rpc.path, request_serializer=rpc.request_class.SerializeToString,
                        response_deserializer=rpc.response_class.FromString)
            try:
                result = call(rpc.request_class(), metadata=(("authorization", "Bearer probe"),), timeout=5)
                await (result.read() if rpc.server_streaming else result)
            except grpc.aio.AioRpcError as error:
                target = missing if error.code() == grpc.StatusCode.UNIMPLEMENTED else served
                target.add(f"{rpc.descriptor.containing_service.name}_{rpc.descriptor.name}")
    return served, missing


@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(suite):
    gateway, _ = suite
    targets = {name: getattr(gateway.settings, f"{name}_target") for name in SERVICE_NAMES}
    served, missing = await _implemented_operations(targets)
    assert served, "no backend RPC is served at all"
    excluded = "|".join(sorted(missing))
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{gateway.url}/openapi.json",
        "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        "--phases", "examples,fuzzing", "--max-examples", "8", "--seed", "7", "--no-shrink", "--workers", "2",
        "--request-timeout", "30", "--exclude-path-regex", r":watch$",
        # How fast hypothesis generates data says nothing about the gateway, and on a shared
        # 2-core machine under load it trips this health check for the larger request bodies.
        "--suppress-health-check", "too_slow",
        "-H", f"Authorization: Bearer {token('admin')}",
    ]
    if excluded:
        command += ["--exclude-operation-id-regex", f"^({excluded})$"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    print(f"not implemented yet (expected 501, skipped by schemathesis): {sorted(missing)}")
    assert process.returncode == 0, text[-20000:]


async def test_watch_batch_streams_server_sent_events_as_the_batch_fills(http, stubs):
    created = await create_supplier(http, "hoodies")
    if created.status_code == 501:
        pytest.skip("the batch service does not implement CreateSupplier yet")
    assert created.status_code == 200, created.text
    order = {"requestId": str(uuid.uuid4()), "buyerId": "buyer-1", "category": "hoodies", "quantity": "10",
             "style": {"styleCount": 1, "colors": ["black"], "sizes": ["M"]}}
    placed = await http.post("/v1/orders", json=order, headers=admin_headers())
    assert placed.status_code == 200, placed.text
    batch_id = placed.json()["batch"]["batchId"]
    async with http.stream("GET", f"/v1/batches/{batch_id}:watch", headers=admin_headers()) as stream:
        assert stream.status_code == 200
        events = stream.aiter_lines()
        first = await _next_data(events)
        direct = await stubs["batch"].GetBatch(batch_pb2.GetBatchRequest(batch_id=batch_id), metadata=auth("admin"))
        assert first["batch"]["currentQuantity"] == str(direct.batch.current_quantity) == "10"
        more = {**order, "requestId": str(uuid.uuid4()), "quantity": "15"}
        assert (await http.post("/v1/orders", json=more, headers=admin_headers())).status_code == 200
        second = await asyncio.wait_for(_next_data(events), timeout=30)
        assert second["batch"]["currentQuantity"] == "25"


async def _next_data(lines) -> dict:
    async for line in lines:
        if line.startswith("data: "):
            return json.loads(line.removeprefix("data: "))
    raise AssertionError("the stream ended without a data event")
