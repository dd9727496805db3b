"""SQL- and script-shaped strings are data: stored and returned verbatim. Oversized requests are refused.

Runs against the compose topology as processes (conftest.fleet). The scheduler
keeps no caller free text (run parameters must fit the target's request message).
"""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from google.protobuf import json_format, struct_pb2
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2

from libs.settings import Settings
from tests.fuzz.fleet import BACKGROUND, SERVICE_DESCRIPTORS, fingerprint, invoke
from tests.support import auth

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HOSTILE = (
    "Robert'); DROP TABLE batch.suppliers;--",
    "' OR '1'='1' --",
    "$$; DELETE FROM rules.rules; $$",
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=\"alert('x')\">",
    "{{order.id}} {% raw %} ${7*7} #{7*7}",
    "\\'; \\\"; \\\\; %00; %s%n",
    "line one\r\nline two\ttabbed",  # inner whitespace: names are trimmed at the ends, by design
    "\u4e2d\u6587 \U0001f9f5 \u202eevil\u202c \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9",
)


def call(fleet, service: str, method: str, request):
    _, channels = fleet
    outcome = invoke(channels[service], SERVICE_DESCRIPTORS[service].methods_by_name[method], request)
    assert outcome.code == grpc.StatusCode.OK, f"{service}.{method}: {outcome.code.name} {outcome.details}"
    return outcome.response


@pytest.mark.parametrize("text", HOSTILE)
def test_batch_keeps_supplier_names_and_order_notes_verbatim(fleet, text):
    category = f"hostile_{uuid.uuid4().hex[:8]}"
    supplier = call(fleet, "batch", "CreateSupplier", batch_pb2.CreateSupplierRequest(
        request_id=uuid.uuid4().hex,
        supplier=batch_pb2.Supplier(
            name=text, categories=[category], moq=10, capacity=100, lead_time_days=3, rating=4.0, active=True,
            max_styles_per_batch=5, price_tiers=[batch_pb2.PriceTier(min_quantity=1, unit_price="2.50")]),
    )).supplier
    assert supplier.name == text
    fetched = call(fleet, "batch", "GetSupplier", batch_pb2.GetSupplierRequest(supplier_id=supplier.supplier_id))
    assert fetched.supplier.name == text
    order = call(fleet, "batch", "PlaceOrder", batch_pb2.PlaceOrderRequest(
        request_id=uuid.uuid4().hex, buyer_id="buyer-hostile", category=category, quantity=1,
        style=batch_pb2.StyleDetails(style_count=1, notes=text, colors=[text]))).order
    fetched = call(fleet, "batch", "GetOrder", batch_pb2.GetOrderRequest(order_id=order.order_id)).order
    assert (fetched.style.notes, list(fetched.style.colors)) == (text, [text])


@pytest.mark.parametrize("text", HOSTILE)
def test_rules_keeps_rule_names_descriptions_and_templates_verbatim(fleet, text):
    rule = rules_pb2.Rule(
        name=text, description=text, type=rules_pb2.RULE_TYPE_NOTIFICATION, active=False, event_types=["order.placed"],
        conditions=json_format.ParseDict({}, struct_pb2.Value()),
        actions=[rules_pb2.Action(type=rules_pb2.ACTION_TYPE_SEND_EMAIL, params=json_format.ParseDict(
            {"recipient": "ops@loom.example", "subject": "hostile", "body": text}, struct_pb2.Struct()))],
    )
    created = call(fleet, "rules", "CreateRule", rules_pb2.CreateRuleRequest(request_id=uuid.uuid4().hex, rule=rule)).rule
    fetched = call(fleet, "rules", "GetRule", rules_pb2.GetRuleRequest(rule_id=created.rule_id)).rule
    assert (fetched.name, fetched.description) == (text, text)
    assert fetched.actions[0].params["body"] == text


@pytest.mark.parametrize("text", HOSTILE)
def test_tracking_keeps_post_titles_verbatim(fleet, text):
    created = call(fleet, "tracking", "CreatePost", tracking_pb2.CreatePostRequest(
        request_id=uuid.uuid4().hex, post=tracking_pb2.Post(title=text, url="https://loom.example/post", published=True))).post
    fetched = call(fleet, "tracking", "GetPost", tracking_pb2.GetPostRequest(post_id=created.post_id)).post
    assert fetched.title == text


@pytest.mark.parametrize("text", HOSTILE)
def test_through_the_gateway_hostile_text_is_json_data_returned_verbatim(fleet, text):
    twin, _ = fleet
    headers = {"authorization": auth("admin")[0][1]}
    with httpx.Client(base_url=f"http://{twin.target('gateway')}", headers=headers, timeout=30) as http:
        created = http.post("/v1/posts", params={"requestId": uuid.uuid4().hex},
                            json={"title": text, "url": "https://loom.example/p", "published": True})
        assert created.status_code == 200, created.text
        fetched = http.get(f"/v1/posts/{created.json()['post']['postId']}")
    assert fetched.headers["content-type"].startswith("application/json")
    assert fetched.json()["post"]["title"] == text


OVERSIZED = {
    "batch": (
        "CreateSupplier", lambda big: batch_pb2.CreateSupplierRequest(request_id="big", supplier=batch_pb2.Supplier(name=big))
    ),
    "rules": ("CreateRule", lambda big: rules_pb2.CreateRuleRequest(request_id="big", rule=rules_pb2.Rule(name=big))),
    "tracking": ("TrackInteraction", lambda big: tracking_pb2.TrackInteractionRequest(
        interaction=tracking_pb2.Interaction(page=big, product_id="p", session_id="s",
                                             type=tracking_pb2.INTERACTION_TYPE_HOVER))),
    "scheduler": ("RunJobNow", lambda big: scheduler_pb2.RunJobNowRequest(request_id=big, job_name="capture-price-snapshot")),
}


@pytest.mark.parametrize("service", sorted(OVERSIZED))
def test_a_request_over_the_size_limit_is_refused_and_changes_nothing(fleet, service):
    twin, channels = fleet
    method, build = OVERSIZED[service]
    request = build("x" * (Settings().grpc_max_message_bytes + 1024))
    before = fingerprint(twin.admin_url, service, BACKGROUND.get(service))
    outcome = invoke(channels[service], SERVICE_DESCRIPTORS[service].methods_by_name[method], request)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
    assert fingerprint(twin.admin_url, service, BACKGROUND.get(service)) == before
