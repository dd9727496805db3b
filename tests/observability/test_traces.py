"""One trace follows an order from the web client through the gateway, batch and PostgreSQL.

Real processes export over OTLP/gRPC to a collector the test runs on loopback; the
test then reads the span tree back from what the collector received.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

import httpx
import psycopg
import pytest
from opentelemetry.trace import SpanKind

from libs.scratch_db import plain_url
from tests.observability.otlp import ReceivedSpan, otlp_collector
from tests.rules.peers import SmtpServer
from tests.support import ServiceProcess, free_port, process_env, token, wait_serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVER, CLIENT = SpanKind.SERVER.value + 1, SpanKind.CLIENT.value + 1  # OTLP numbers kinds from 1


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url)  # any answer: healthz is 503 while other backends are absent
                return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def traced_suite(database_url, tmp_path_factory):
    """Batch and the gateway as processes exporting spans to a collector the test runs."""
    logs = tmp_path_factory.mktemp("logs")
    with SmtpServer() as smtp:
        async with otlp_collector() as collector:
            ports = {"batch": free_port(), "rules": free_port(), "gateway": free_port()}
            otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
            shared = {
                "LOOM_BATCH_TARGET": f"127.0.0.1:{ports['batch']}", "LOOM_RULES_TARGET": f"127.0.0.1:{ports['rules']}",
                "LOOM_LOG_LEVEL": "info", "LOOM_OUTBOX_POLL_SECONDS": "0.2", "LOOM_WORKER_POLL_SECONDS": "0.2", **otel,
            }
            batch_log = open(logs / "batch.jsonl", "wb")  # noqa: SIM115 - closed when the process ends
            processes = [
                ServiceProcess("batch", process_env("batch", database_url, ports["batch"], **shared), stdout=batch_log),
                ServiceProcess("rules", process_env(
                    "rules", database_url, ports["rules"], **shared, LOOM_SMTP_HOST="127.0.0.1", LOOM_SMTP_PORT=str(smtp.port)
                )),
                ServiceProcess("gateway", process_env("gateway", database_url, ports["gateway"], **shared)),
            ]
            for process in processes:
                process.start()
            try:
                await wait_serving(shared["LOOM_BATCH_TARGET"], timeout=90)
                await wait_serving(shared["LOOM_RULES_TARGET"], timeout=90)
                url = f"http://127.0.0.1:{ports['gateway']}"
                await wait_http(f"{url}/healthz")
                yield collector, url, logs / "batch.jsonl"
            finally:
                # Off the event loop: the collector on it must take their last exports as they stop.
                for process in reversed(processes):
                    await asyncio.to_thread(process.terminate)
                batch_log.close()


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id]


async def sql(database_url: str, statement: str) -> list[tuple]:
    def run() -> list[tuple]:
        with psycopg.connect(plain_url(database_url), autocommit=True) as conn:
            return conn.execute(statement).fetchall()

    return await asyncio.to_thread(run)


async def test_an_order_placed_through_the_gateway_is_traced_to_its_sql_and_to_the_email_its_rule_sends(
    traced_suite, database_url
):
    collector, url, _ = traced_suite
    trace_id, web_span_id = secrets.token_hex(16), secrets.token_hex(8)
    category = f"tees_{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        admin = {"authorization": f"Bearer {token('admin')}"}
        supplier = {
            "name": "Acme", "categories": [category], "moq": 100, "capacity": 200, "leadTimeDays": 10,
            "rating": 4.5, "active": True, "maxStylesPerBatch": 5, "contactEmail": "ops@acme.example",
            "priceTiers": [{"minQuantity": 1, "unitPrice": "6.00"}],
        }
        created = await client.post(f"/v1/suppliers?requestId={uuid.uuid4()}", json=supplier, headers=admin)
        assert created.status_code == 200, created.text
        rule = {
            "name": f"mail {category}", "type": "RULE_TYPE_NOTIFICATION", "active": True, "eventTypes": ["order.placed"],
            "conditions": {"order_category": category},
            "actions": [{"type": "ACTION_TYPE_SEND_EMAIL",
                         "params": {"recipient": "ops@example.com", "subject": "order {{order.id}}", "body": "placed"}}],
        }
        made = await client.post("/v1/rules", json={"requestId": str(uuid.uuid4()), "rule": rule}, headers=admin)
        assert made.status_code == 200, made.text
        placed = await client.post(
            "/v1/orders",
            json={"requestId": str(uuid.uuid4()), "category": category, "quantity": 10,
                  "style": {"styleCount": 1, "colors": ["black"], "sizes": ["M"]}},
            headers={"authorization": f"Bearer {token('buyer')}", "traceparent": f"00-{trace_id}-{web_span_id}-01"},
        )
        assert placed.status_code == 200, placed.text

    def complete(spans: list[ReceivedSpan]) -> bool:
        """Each process exports on its own schedule: wait for every part of the tree."""
        ours = [s for s in spans if s.trace_id == trace_id]
        return (
            any(s.service == "loom-gateway" and s.parent_span_id == web_span_id for s in ours)
            and any(s.service == "loom-gateway" and s.kind == CLIENT for s in ours)
            and any(s.service == "loom-batch" and s.kind == SERVER for s in ours)
        ) and any(s.name == "batch.group_commit" and (trace_id, batch_span_id(ours)) in s.links for s in spans)

    spans = [s for s in await collector.wait_for(complete) if s.trace_id == trace_id]
    gateway_root = next(s for s in spans if s.service == "loom-gateway" and s.parent_span_id == web_span_id)
    gateway_call = next(s for s in spans if s.service == "loom-gateway" and s.kind == CLIENT)
    batch_server = next(s for s in spans if s.service == "loom-batch" and s.kind == SERVER)
    assert batch_server.name == "/loom.batch.v1.BatchService/PlaceOrder"
    assert batch_server.parent_span_id == gateway_call.span_id
    assert _is_ancestor(spans, gateway_root, gateway_call)
    # The order was written by a group commit shared with concurrent calls: its own root
    # span, linked to every call it served, with the SQL statements under it.
    everything = collector.spans
    commit = next(s for s in everything if s.name == "batch.group_commit" and (trace_id, batch_server.span_id) in s.links)
    statements = [s for s in everything if s.trace_id == commit.trace_id and s.kind == CLIENT and s.service == "loom-batch"]
    assert statements and all(_is_ancestor(everything, commit, s) for s in statements)
    assert any("INSERT INTO batch.orders" in str(s.attributes.get("db.statement", s.attributes.get("db.query.text", "")))
               for s in statements)
    # Its outbox event carries the commit's traceparent, for whatever it causes later to link to.
    order_id = placed.json()["order"]["orderId"]
    [(traceparent,)] = await sql(
        database_url, f"SELECT trace_parent FROM batch.outbox WHERE type = 'order.placed' AND data->'order'->>'id' = '{order_id}'"
    )
    assert traceparent.split("-")[1:3] == [commit.trace_id, commit.span_id]

    # Later, in the rules process: the event's evaluation is a trace of its own, linked to
    # the commit that wrote the event, with the rule's e-mail under it.
    def evaluated(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [
            s for s in spans if s.name == "rules.evaluate_event" and (commit.trace_id, commit.span_id) in s.links
            and s.attributes.get("loom.event_type") == "order.placed"
        ]

    everything = await collector.wait_for(
        lambda spans: any(s.name == "smtp.send" and s.trace_id in {e.trace_id for e in evaluated(spans)} for s in spans),
        timeout=60,
    )
    [evaluation] = evaluated(everything)
    assert evaluation.service == "loom-rules" and evaluation.parent_span_id == ""
    sent = next(s for s in everything if s.name == "smtp.send" and s.trace_id == evaluation.trace_id)
    assert _is_ancestor(everything, evaluation, sent)


def batch_span_id(spans: list[ReceivedSpan]) -> str:
    return next((s.span_id for s in spans if s.service == "loom-batch" and s.kind == SERVER), "")


async def test_log_lines_of_a_traced_call_carry_its_trace_and_span_ids(traced_suite):
    collector, url, batch_log = traced_suite
    trace_id = secrets.token_hex(16)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        reply = await client.get(
            "/v1/batches?pageSize=1",
            headers={"authorization": f"Bearer {token('admin')}", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        assert reply.status_code == 200, reply.text
    await collector.wait_for(lambda spans: any(s.trace_id == trace_id and s.service == "loom-batch" for s in spans))
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in batch_log.read_text().splitlines() if line.startswith("{")]
        rpc = [line for line in lines if line.get("event") == "rpc" and line.get("trace_id") == trace_id]
        if rpc or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert rpc, "no rpc log line with the call's trace id"
    assert rpc[0]["method"] == "/loom.batch.v1.BatchService/ListBatches"
    assert len(rpc[0]["span_id"]) == 16 and rpc[0]["request_id"]


async def test_the_connection_pools_liveness_ping_is_not_a_span_of_the_call(traced_suite):
    collector, url, _ = traced_suite
    trace_id = secrets.token_hex(16)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        reply = await client.get(
            "/v1/suppliers?pageSize=1",
            headers={"authorization": f"Bearer {token('admin')}", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        assert reply.status_code == 200, reply.text

    def statements(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.trace_id == trace_id and s.service == "loom-batch" and s.kind == CLIENT]

    # The ping ran before the read on the same checkout, so it would have been exported with it or before.
    spans = statements(await collector.wait_for(lambda spans: any(s.name == "SELECT" for s in statements(spans))))
    assert [s.name for s in spans if s.attributes.get("db.statement") == ";" or s.name == ";"] == []


def _is_ancestor(spans: list[ReceivedSpan], ancestor: ReceivedSpan, span: ReceivedSpan) -> bool:
    by_id = {s.span_id: s for s in spans}
    current = span
    while current.parent_span_id:
        if current.parent_span_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_span_id)
        if current is None:
            return False
    return False
