"""Small real gRPC servers standing in for the peers the rules service calls (batch, scheduler, tracking),
and a real aiosmtpd SMTP server. Only the RPCs the rules service uses are implemented."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiosmtpd.controller import Controller
from loom.batch.v1 import batch_pb2, batch_pb2_grpc
from loom.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from loom.tracking.v1 import tracking_pb2, tracking_pb2_grpc

from tests.support import free_port


@dataclass
class FakeBatch(batch_pb2_grpc.BatchServiceServicer):
    """Records calls; `fail_next[method]` lists status codes to answer with before succeeding."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    fail_next: dict[str, list[grpc.StatusCode]] = field(default_factory=dict)
    fetches: Counter = field(default_factory=Counter)
    # Called after each UpdateOrderStatus, as the real service would emit its event.
    on_update: Callable[[batch_pb2.UpdateOrderStatusRequest, Any], Awaitable[None]] | None = None
    supplier: batch_pb2.Supplier = field(
        default_factory=lambda: batch_pb2.Supplier(supplier_id="sup-best", name="Best Co", capacity=900, moq=100, rating=4.5)
    )

    async def _maybe_fail(self, method: str, context) -> None:
        pending = self.fail_next.get(method)
        if pending:
            await context.abort(pending.pop(0), f"{method} failing on purpose")

    async def UpdateOrderStatus(self, request, context):
        await self._maybe_fail("UpdateOrderStatus", context)
        self.calls.append(("UpdateOrderStatus", request))
        if self.on_update is not None:
            await self.on_update(request, context)
        return batch_pb2.UpdateOrderStatusResponse(order=batch_pb2.Order(order_id=request.order_id, status=request.status))

    async def AssignSupplier(self, request, context):
        await self._maybe_fail("AssignSupplier", context)
        self.calls.append(("AssignSupplier", request))
        return batch_pb2.AssignSupplierResponse()

    async def AdvanceBatch(self, request, context):
        await self._maybe_fail("AdvanceBatch", context)
        self.calls.append(("AdvanceBatch", request))
        return batch_pb2.AdvanceBatchResponse()

    async def RecommendSupplier(self, request, context):
        self.fetches["RecommendSupplier"] += 1
        await self._maybe_fail("RecommendSupplier", context)
        return batch_pb2.RecommendSupplierResponse(supplier=self.supplier, unit_price="4.75")

    async def GetBatch(self, request, context):
        self.fetches["GetBatch"] += 1
        await self._maybe_fail("GetBatch", context)
        return batch_pb2.GetBatchResponse(
            batch=batch_pb2.Batch(
                batch_id=request.batch_id,
                status=batch_pb2.BATCH_STATUS_FILLING,
                category="t_shirts",
                target_quantity=100,
                current_quantity=80,
                capacity=500,
                fill_percentage=80.0,
            )
        )

    recent_orders: int = 0

    async def CountRecentOrders(self, request, context):
        self.fetches["CountRecentOrders"] += 1
        self.calls.append(("CountRecentOrders", request))
        return batch_pb2.CountRecentOrdersResponse(count=self.recent_orders)

    def requests(self, method: str) -> list:
        return [request for name, request in self.calls if name == method]


@dataclass
class FakeScheduler(scheduler_pb2_grpc.SchedulerServiceServicer):
    runs: list[scheduler_pb2.RunJobNowRequest] = field(default_factory=list)
    jobs: tuple[str, ...] = ("purge-old-data", "orchestrate-batches")

    async def ListJobs(self, request, context):
        return scheduler_pb2.ListJobsResponse(jobs=[scheduler_pb2.Job(job_name=name) for name in self.jobs])

    async def RunJobNow(self, request, context):
        self.runs.append(request)
        return scheduler_pb2.RunJobNowResponse()


@dataclass
class FakeTracking(tracking_pb2_grpc.TrackingServiceServicer):
    interactions: int = 0
    asked: list = field(default_factory=list)

    async def CountProductInteractions(self, request, context):
        self.asked.append(request)
        return tracking_pb2.CountProductInteractionsResponse(count=self.interactions)


class Peers:
    def __init__(self) -> None:
        self.batch, self.scheduler, self.tracking = FakeBatch(), FakeScheduler(), FakeTracking()
        self.server = grpc.aio.server()
        batch_pb2_grpc.add_BatchServiceServicer_to_server(self.batch, self.server)
        tracking_pb2_grpc.add_TrackingServiceServicer_to_server(self.tracking, self.server)
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(self.scheduler, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.batch.calls.clear()
        self.batch.fail_next.clear()
        self.batch.fetches.clear()
        self.batch.on_update = None
        self.scheduler.runs.clear()
        self.batch.recent_orders = 0
        self.tracking.interactions = 0
        self.tracking.asked.clear()


class MailSink:
    """Collects the messages a real aiosmtpd server receives."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.sink = MailSink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):
    """Polls an async check until it returns something truthy, or fails after the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout}s: last result {result!r}")
        await asyncio.sleep(interval)
