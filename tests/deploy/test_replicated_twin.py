"""Two of everything on one PostgreSQL: 2 x batch, rules, tracking, gateway and scheduler.

The compose topology as processes (tests/deploy/twin.py) with every process doubled and
every client on a round-robin target over both replicas of what it calls. Orders go in
through both gateways at once; the invariants hold as with one of each: no batch over
its capacity, every acknowledged order stored once, each (rule, event) executed once.
Then the batch, and the scheduler, replica serving SSE streams is killed with kill -9 and
the streams go on from the other.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import json_format, struct_pb2
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2

from libs.clients import STUBS
from libs.scratch_db import plain_url, server_url
from libs.settings import SERVICE_NAMES
from tests.deploy.twin import Twin, eventually
from tests.support import auth, token

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

REPLICAS = 2
ORDERS_PER_GATEWAY = 20
ADMIN = auth("admin")
# eight processes with a database: small pools keep them inside the server's connections
SMALL_POOLS = {"LOOM_DB_POOL_SIZE": "3", "LOOM_DB_MAX_OVERFLOW": "3"}
EXTRA_ENV = {
    **{service: SMALL_POOLS for service in SERVICE_NAMES},
    "scheduler-2": SMALL_POOLS,
    "batch": {**SMALL_POOLS, "LOOM_OUTBOX_POLL_SECONDS": "0.2"},
    "gateway": {"LOOM_LOG_LEVEL": "info"},  # its "stream resubscribed" lines
}


@pytest.fixture(scope="module")
def twin():
    with Twin(server_url=server_url(), replicas=REPLICAS, extra_env=EXTRA_ENV) as running:
        yield running


def rows(twin: Twin, query: str, *args) -> list[tuple]:
    with psycopg.connect(plain_url(twin.admin_url), autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


async def call(twin: Twin, service: str, method: str, request, replica: int = 0):
    async with grpc.aio.insecure_channel(twin.target(service, replica)) as channel:
        return await getattr(STUBS[service](channel), method)(request, metadata=ADMIN, timeout=30)


async def supplier(twin: Twin, category: str, *, moq: int, capacity: int, replica: int = 0) -> None:
    await call(twin, "batch", "CreateSupplier", batch_pb2.CreateSupplierRequest(
        request_id=uuid.uuid4().hex,
        supplier=batch_pb2.Supplier(
            name="Twin Textiles", categories=[category], moq=moq, capacity=capacity,
            price_tiers=[batch_pb2.PriceTier(min_quantity=1, unit_price="5.00")], lead_time_days=7, rating=4.0,
            active=True, max_styles_per_batch=1000,
        ),
    ), replica)


def test_two_of_every_process_serve(twin):
    assert {name: len(processes) for name, processes in twin.processes.items()} == dict.fromkeys(
        (*SERVICE_NAMES, "gateway"), REPLICAS
    )
    for processes in twin.processes.values():
        for process in processes:
            assert process.popen.poll() is None and process.ready(), process.log()
    for replica in range(REPLICAS):
        reply = httpx.get(f"http://{twin.target('gateway', replica)}/healthz", timeout=10)
        assert reply.json()["backends"] == dict.fromkeys(SERVICE_NAMES, "SERVING")


async def test_orders_through_both_gateways_fill_batches_within_capacity_and_fire_the_rule_once_each(twin):
    category = f"twin_{uuid.uuid4().hex[:8]}"
    await supplier(twin, category, moq=20, capacity=30)  # several batches fill and overflow into new ones
    rule = await call(twin, "rules", "CreateRule", rules_pb2.CreateRuleRequest(request_id=uuid.uuid4().hex, rule=rules_pb2.Rule(
        name=f"note {category}", type=rules_pb2.RULE_TYPE_NOTIFICATION, active=True, event_types=["order.placed"],
        conditions=json_format.ParseDict({}, struct_pb2.Value()),
        actions=[rules_pb2.Action(type=rules_pb2.ACTION_TYPE_SEND_EMAIL, params=json_format.ParseDict(
            {"recipient": "ops@loom.example", "subject": "order {{order.id}}", "body": "placed"}, struct_pb2.Struct()))],
    )))
    acknowledged: dict[str, str] = {}

    async def buyer(gateway: int, orders: range) -> None:
        headers = {"authorization": f"Bearer {token('buyer', f'buyer-{gateway}')}"}
        async with httpx.AsyncClient(base_url=f"http://{twin.target('gateway', gateway)}", timeout=30) as http:
            for i in orders:
                key = f"{category}-{gateway}-{i}"
                body = {"requestId": key, "category": category, "quantity": 1 + i % 3, "style": {"styleCount": 1}}
                reply = await http.post("/v1/orders", json=body, headers=headers)
                assert reply.status_code == 200, reply.text
                acknowledged[key] = reply.json()["order"]["orderId"]

    half = ORDERS_PER_GATEWAY // 2
    await asyncio.gather(*(
        buyer(gateway, range(start, start + half)) for gateway in range(REPLICAS) for start in (0, half)
    ))

    stored = rows(twin, "SELECT id::text FROM batch.orders WHERE category = %s", category)
    assert sorted(i for (i,) in stored) == sorted(acknowledged.values())  # none lost, none twice
    assert len(acknowledged) == REPLICAS * ORDERS_PER_GATEWAY
    batches = rows(
        twin,
        "SELECT b.current_quantity, b.capacity, coalesce(sum(c.quantity), 0) FROM batch.batches b "
        "LEFT JOIN batch.contributions c ON c.batch_id = b.id WHERE b.category = %s GROUP BY b.id",
        category,
    )
    assert len(batches) > 1
    assert all(quantity == contributed <= capacity for quantity, capacity, contributed in batches), batches

    def each_order_ran_the_rule_once():
        executed = rows(
            twin, "SELECT event_id, count(*) FROM rules.executions WHERE rule_id = %s::uuid GROUP BY event_id",
            rule.rule.rule_id,
        )
        if any(count != 1 for _, count in executed):
            return f"a rule ran twice for one event: {executed}"
        return len(executed) == len(acknowledged) or f"{len(executed)} of {len(acknowledged)} order events"

    assert await eventually(each_order_ran_the_rule_once) is True


class SseWatcher:
    """Reads one event stream through a gateway: the messages seen, and how it ended."""

    def __init__(self, url: str, path: str) -> None:
        self.url, self.path = url, path
        self.messages: list[dict] = []
        self.ended: str | None = None
        self.opened = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as http, http.stream(
            "GET", self.path, headers=dict(ADMIN)
        ) as reply:
            assert reply.status_code == 200
            self.opened.set()
            buffer = ""
            async for chunk in reply.aiter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    if block.startswith("data: "):
                        self.messages.append(json.loads(block[6:]))
                    elif block.startswith("event: "):
                        self.ended = block
                        return

    @property
    def quantities(self) -> list[int]:
        return [int(m["batch"]["currentQuantity"]) for m in self.messages]


def watchers_on_both_gateways(twin: Twin, path: str) -> list[SseWatcher]:
    """Two streams through each gateway: round robin puts each pair on both backend replicas,
    so whichever replica dies, some stream was on it."""
    return [SseWatcher(f"http://{twin.target('gateway', g)}", path) for g in range(REPLICAS) for _ in range(2)]


def resubscriptions(twin: Twin) -> int:
    return sum(p.log_path.read_text().count("stream resubscribed") for p in twin.processes["gateway"])


async def one_unit(twin: Twin, category: str, *, replica: int) -> batch_pb2.PlaceOrderResponse:
    return await call(twin, "batch", "PlaceOrder", batch_pb2.PlaceOrderRequest(
        request_id=uuid.uuid4().hex, buyer_id="sse-buyer", category=category, quantity=1,
        style=batch_pb2.StyleDetails(style_count=1),
    ), replica)


async def test_an_sse_stream_goes_on_from_the_other_batch_replica_after_kill_9_of_the_one_serving_it(twin):
    category = f"twin_sse_{uuid.uuid4().hex[:8]}"
    await supplier(twin, category, moq=500, capacity=1000)
    batch_id = (await one_unit(twin, category, replica=0)).batch.batch_id
    watchers = watchers_on_both_gateways(twin, f"/v1/batches/{batch_id}:watch")
    assert await eventually(lambda: all(w.quantities == [1] for w in watchers), timeout=30) is True

    twin.processes["batch"][0].kill()
    for _ in range(4):  # to the survivor, each a change every stream must see
        await one_unit(twin, category, replica=1)
        await asyncio.sleep(0.5)

    try:
        outcome = await eventually(lambda: all(w.quantities[-1:] == [5] for w in watchers), timeout=30)
        assert outcome is True, [(w.quantities, w.ended) for w in watchers]
        assert all(w.ended is None for w in watchers), [w.ended for w in watchers]  # none closed or failed
        assert all(w.quantities == sorted(set(w.quantities)) for w in watchers)  # no repeats, in order
    finally:
        for watcher in watchers:
            watcher.task.cancel()
    assert resubscriptions(twin) >= 1


async def test_a_job_run_stream_goes_on_from_the_other_scheduler_after_kill_9_of_the_one_serving_it(twin):
    before = resubscriptions(twin)
    watchers = watchers_on_both_gateways(twin, "/v1/jobRuns:watch?jobName=orchestrate-batches")
    await asyncio.wait_for(asyncio.gather(*(w.opened.wait() for w in watchers)), 30)
    await asyncio.sleep(1)  # every stream subscribed on its replica

    twin.processes["scheduler"][0].kill()
    await asyncio.sleep(1)  # the gateways resubscribe the streams it served
    run = await call(twin, "scheduler", "RunJobNow", scheduler_pb2.RunJobNowRequest(
        request_id=uuid.uuid4().hex, job_name="orchestrate-batches"), replica=1)

    try:
        def every_stream_saw_the_run():
            return all(any(m["run"]["runId"] == run.run.run_id for m in w.messages) for w in watchers)

        outcome = await eventually(every_stream_saw_the_run, timeout=30)
        assert outcome is True, [(w.messages, w.ended) for w in watchers]
        assert all(w.ended is None for w in watchers), [w.ended for w in watchers]
    finally:
        for watcher in watchers:
            watcher.task.cancel()
    assert resubscriptions(twin) > before
