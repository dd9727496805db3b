"""Small real gRPC servers standing in for the peers the scheduler's jobs call.

Only the target RPCs are implemented (the real batch and tracking services are
other issues' work); each records the calls it gets and can be told to fail or
to hold a call open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from loom.batch.v1 import batch_pb2, batch_pb2_grpc
from loom.tracking.v1 import tracking_pb2, tracking_pb2_grpc


class Behaviour:
    """What the next calls do: fail with these codes first, or wait for `release`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (method, request_id)
        self.logical_times: dict[str, str] = {}  # request_id -> the loom-logical-time it carried
        self.failures: list[grpc.StatusCode] = []
        self.always_fail: grpc.StatusCode | None = None
        self.release: asyncio.Event | None = None
        self.delay = 0.0  # seconds each call takes
        self.entered = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.completed: list[str] = []  # request ids of calls answered successfully

    async def answer(self, method: str, request, context) -> None:
        self.calls.append((method, request.request_id))
        metadata = dict(context.invocation_metadata() or ())
        if "loom-logical-time" in metadata:
            self.logical_times[request.request_id] = metadata["loom-logical-time"]
        self.entered.set()
        if self.always_fail is not None:
            await context.abort(self.always_fail, f"{method}: planned failure")
        if self.failures:
            await context.abort(self.failures.pop(0), f"{method}: planned failure")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.release is not None:
                await self.release.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.completed.append(request.request_id)

    def request_ids(self, method: str) -> list[str]:
        return [request_id for called, request_id in self.calls if called == method]


class FakeBatch(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def Orchestrate(self, request, context):
        await self.behaviour.answer("Orchestrate", request, context)
        return batch_pb2.OrchestrateResponse(batches_examined=7, batches_confirmed=2, orders_refunded=3)

    async def CapturePriceSnapshot(self, request, context):
        await self.behaviour.answer("CapturePriceSnapshot", request, context)
        return batch_pb2.CapturePriceSnapshotResponse(prices_recorded=12, market_changes=1)

    async def PurgeOldData(self, request, context):
        await self.behaviour.answer("PurgeOldData", request, context)
        return batch_pb2.PurgeOldDataResponse(outbox_rows_deleted=request.retention_days, snapshots_deleted=4)


class FakeTracking(tracking_pb2_grpc.TrackingServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def AggregatePopularity(self, request, context):
        await self.behaviour.answer("AggregatePopularity", request, context)
        return tracking_pb2.AggregatePopularityResponse(interactions_scanned=5_000_000_000, products_scored=40)


@asynccontextmanager
async def peers(behaviour: Behaviour) -> AsyncIterator[str]:
    """Batch and tracking fakes on one loopback port; yields its address."""
    server = grpc.aio.server()
    batch_pb2_grpc.add_BatchServiceServicer_to_server(FakeBatch(behaviour), server)
    tracking_pb2_grpc.add_TrackingServiceServicer_to_server(FakeTracking(behaviour), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if behaviour.release is not None:
            behaviour.release.set()
        await server.stop(0)
