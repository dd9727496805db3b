"""A mixed client load (orders, interaction events, shares, job runs) that records what was acknowledged.

Every logical operation keeps its idempotency key (request_id / client_event_id)
across attempts and is retried while the service is unreachable, so after the
load every operation is acknowledged exactly once and the database must hold
exactly those writes: none lost, none twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import httpx
import psycopg
from google.protobuf import json_format, struct_pb2
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2
from loom.scheduler.v1 import scheduler_pb2
from loom.tracking.v1 import tracking_pb2

from libs.clients import STUBS
from libs.scratch_db import plain_url
from tests.deploy.twin import Twin
from tests.support import auth, from_gateway

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
RETRYABLE_HTTP = {502, 503, 504}
# The job the load runs now and then: it confirms batches past 75% and creates their supplier orders
# while orders keep arriving (its schedule, every 5 minutes, does not fire within a test).
JOB = "orchestrate-batches"
ATTEMPT_TIMEOUT_SECONDS = 3.0
GIVE_UP_SECONDS = 90.0
ADMIN = auth("admin")


@dataclass
class MixedLoad:
    twin: Twin
    category: str = field(default_factory=lambda: f"fault_{uuid.uuid4().hex[:8]}")
    acknowledged: dict[str, dict[str, str]] = field(
        default_factory=lambda: {k: {} for k in ("order", "interaction", "share", "job_run")}
    )
    retried: Counter = field(default_factory=Counter)  # (service, status) -> attempts answered so, then retried
    failures: list[str] = field(default_factory=list)
    post_id: str = ""
    rule_id: str = ""
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _http: httpx.AsyncClient | None = None

    def stub(self, service: str):
        if service not in self._channels:
            # a plain channel: the test, not a retry policy, sees UNAVAILABLE
            self._channels[service] = grpc.aio.insecure_channel(self.twin.target(service))
        return STUBS[service](self._channels[service])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        if self._http is not None:
            await self._http.aclose()

    async def post(self, path: str, body: dict) -> dict:
        """One logical HTTP call through the gateway, repeated while the gateway or its backend is down."""
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=f"http://{self.twin.target('gateway')}", timeout=ATTEMPT_TIMEOUT_SECONDS)
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                reply = await self._http.post(path, json=body)
            except httpx.TransportError:
                reply = None
            if reply is not None and reply.status_code == 429:  # the gateway's rate limit: wait as it says
                self.retried["gateway rate limit", "429"] += 1
                await asyncio.sleep(float(reply.headers.get("retry-after", "1")))
                continue
            if reply is not None and reply.status_code not in RETRYABLE_HTTP:
                reply.raise_for_status()
                return reply.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"POST {path}: gave up after {GIVE_UP_SECONDS}s")
            self.retried["gateway", "unreachable" if reply is None else str(reply.status_code)] += 1
            await asyncio.sleep(0.2)

    async def call(self, service: str, method: str, request, metadata=ADMIN):
        """One logical operation: the same request until it is answered (retrying only transient failures)."""
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while True:
            try:
                return await getattr(self.stub(service), method)(request, metadata=metadata, timeout=ATTEMPT_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
                self.retried[service, error.code().name] += 1
                await asyncio.sleep(0.2)

    async def prepare(self) -> None:
        supplier = batch_pb2.Supplier(
            name="Fault Tolerant Textiles", categories=[self.category], moq=100, capacity=1_000_000,
            price_tiers=[batch_pb2.PriceTier(min_quantity=1, unit_price="5.00")], lead_time_days=7, rating=4.0,
            active=True, max_styles_per_batch=1000, contact_email="ops@ftt.example",
        )
        await self.call(
            "batch", "CreateSupplier", batch_pb2.CreateSupplierRequest(request_id=uuid.uuid4().hex, supplier=supplier)
        )
        post = await self.call("tracking", "CreatePost", tracking_pb2.CreatePostRequest(
            request_id=uuid.uuid4().hex,
            post=tracking_pb2.Post(title="Fault drill", url="https://loom.example/p", published=True),
        ))
        self.post_id = post.post.post_id
        rule = rules_pb2.Rule(
            name="note every order", type=rules_pb2.RULE_TYPE_NOTIFICATION, active=True, event_types=["order.placed"],
            conditions=json_format.ParseDict({}, struct_pb2.Value()),
            actions=[rules_pb2.Action(type=rules_pb2.ACTION_TYPE_SEND_EMAIL, params=json_format.ParseDict(
                {"recipient": "ops@loom.example", "subject": "order {{order.id}}", "body": "placed"}, struct_pb2.Struct()))],
        )
        created = await self.call("rules", "CreateRule", rules_pb2.CreateRuleRequest(request_id=uuid.uuid4().hex, rule=rule))
        self.rule_id = created.rule.rule_id

    async def order(self, i: int) -> None:
        key = f"order-{self.category}-{i}"
        reply = await self.call("batch", "PlaceOrder", batch_pb2.PlaceOrderRequest(
            request_id=key, buyer_id=f"buyer-{i % 7}", category=self.category, quantity=1 + i % 5,
            style=batch_pb2.StyleDetails(style_count=1)))
        self.acknowledged["order"][key] = reply.order.order_id

    async def interaction(self, i: int) -> None:
        key = f"ix-{self.category}-{i}"
        reply = await self.call("tracking", "TrackInteraction", tracking_pb2.TrackInteractionRequest(
            interaction=tracking_pb2.Interaction(client_event_id=key, type=tracking_pb2.INTERACTION_TYPE_QUICK_VIEW_CLICK,
                                                 product_id=f"product-{i % 13}", session_id=f"session-{i}")), metadata=())
        self.acknowledged["interaction"][key] = reply.interaction_id

    async def web_interaction(self, i: int) -> None:
        key = f"web-{self.category}-{i}"
        reply = await self.post("/v1/interactions", {"interaction": {
            "clientEventId": key, "type": "INTERACTION_TYPE_HOVER", "productId": f"product-{i % 13}", "sessionId": f"web-{i}"}})
        self.acknowledged["interaction"][key] = reply["interactionId"]

    async def share(self, i: int) -> None:
        key = f"share-{self.category}-{i}"
        # a fresh client IP per share keeps the 10-per-hour limit out of the way
        metadata = from_gateway(f"198.51.{i // 250 % 250}.{i % 250 + 1}")
        reply = await self.call("tracking", "TrackShare", tracking_pb2.TrackShareRequest(
            post_id=self.post_id, platform=tracking_pb2.SHARE_PLATFORM_LINKEDIN, session_id=f"s-{i}", request_id=key),
            metadata=metadata)
        self.acknowledged["share"][key] = reply.share_id

    async def job_run(self, i: int) -> None:
        key = f"run-{self.category}-{i}"
        reply = await self.call("scheduler", "RunJobNow", scheduler_pb2.RunJobNowRequest(
            request_id=key, job_name=JOB))
        self.acknowledged["job_run"][key] = reply.run.run_id

    async def around(self, disturb: Callable[[], Awaitable[None]]) -> None:
        """Runs the load while `disturb()` does its damage, then stops it and waits for every client."""
        stop = asyncio.Event()
        running = asyncio.create_task(self.run(stop))
        try:
            await disturb()
        finally:
            stop.set()
            await running
            await self.close()

    def stored(self) -> dict[str, set[str]]:
        """The ids the database holds for what this load wrote, by kind (compare with `acknowledged`)."""
        queries = {
            "order": ("SELECT id::text FROM batch.orders WHERE category = %s", self.category),
            "interaction": (
                "SELECT id::text FROM tracking.interactions WHERE client_event_id LIKE ANY(%s)",
                [f"ix-{self.category}-%", f"web-{self.category}-%"],
            ),
            "share": ("SELECT id::text FROM tracking.shares WHERE post_id = %s", self.post_id),
            # first attempts only: a retry of a run is a later attempt of the same run
            "job_run": ("SELECT id::text FROM scheduler.job_runs WHERE job_name = %s AND attempt = 1", JOB),
        }
        with psycopg.connect(plain_url(self.twin.admin_url), autocommit=True) as conn:
            return {kind: {i for (i,) in conn.execute(sql, (arg,))} for kind, (sql, arg) in queries.items()}

    def acknowledged_ids(self) -> dict[str, set[str]]:
        return {kind: set(ids.values()) for kind, ids in self.acknowledged.items()}

    async def run(self, stop: asyncio.Event, *, clients: int = 4) -> None:
        operations = (self.order, self.interaction, self.order, self.share, self.web_interaction, self.job_run)
        counter = iter(range(10**9))

        async def client() -> None:
            for i in counter:
                if stop.is_set():
                    return
                operation = operations[i % len(operations)]
                try:
                    await operation(i)
                except grpc.aio.AioRpcError as error:
                    self.failures.append(f"{operation.__name__} {i}: {error.code().name} {error.details()}")
                    return
                except (httpx.HTTPError, TimeoutError) as error:
                    self.failures.append(f"{operation.__name__} {i}: {error}")
                    return

        await asyncio.gather(*(client() for _ in range(clients)))
