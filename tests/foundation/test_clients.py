"""Service-to-service channels: retries of UNAVAILABLE, default deadlines, identity."""

import asyncio
import uuid

import grpc
import pytest
import structlog
from loom.batch.v1 import batch_pb2, batch_pb2_grpc

from libs import causation
from libs.auth import current_caller
from libs.bootstrap import ServiceSpec, start
from libs.clients import ServiceToken, open_channel
from services.batch.settings import BatchSettings
from tests.support import TEST_JWT_SECRET, settings_for


class FlakyServicer(batch_pb2_grpc.BatchServiceServicer):
    """GetBatch fails UNAVAILABLE twice, then answers with who called and under which request id."""

    def __init__(self) -> None:
        self.attempts = 0

    async def GetBatch(self, request, context):
        self.attempts += 1
        if self.attempts <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        request_id = dict(context.invocation_metadata()).get("x-request-id", "")
        return batch_pb2.GetBatchResponse(batch=batch_pb2.Batch(batch_id=f"{current_caller().subject}|{request_id}"))

    async def ListBatches(self, request, context):
        await asyncio.sleep(5)
        return batch_pb2.ListBatchesResponse()

    async def GetSupplier(self, request, context):
        """Answers with the causation chain the call arrived with."""
        return batch_pb2.GetSupplierResponse(supplier=batch_pb2.Supplier(name=causation.current()))


@pytest.fixture
async def flaky():
    servicer = FlakyServicer()

    async def setup(context):
        batch_pb2_grpc.add_BatchServiceServicer_to_server(servicer, context.server)

    spec = ServiceSpec("batch", BatchSettings, ("loom.batch.v1.BatchService",), setup, uses_database=False)
    running = await start(spec, settings_for("batch", database_url=None), port=0)
    yield running.target, servicer
    await running.stop(grace=0)


async def test_unavailable_is_retried_transparently_and_carries_service_identity_and_request_id(flaky):
    target, servicer = flaky
    token = ServiceToken(TEST_JWT_SECRET, subject="service:rules", issuer="loom")
    channel = open_channel(target, token=token)
    structlog.contextvars.bind_contextvars(request_id="req-123")
    try:
        reply = await batch_pb2_grpc.BatchServiceStub(channel).GetBatch(batch_pb2.GetBatchRequest(batch_id=str(uuid.uuid4())))
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
        await channel.close()
    assert servicer.attempts == 3
    assert reply.batch.batch_id == "service:rules|req-123"


async def test_calls_without_an_explicit_deadline_get_the_default_one(flaky):
    target, _ = flaky
    token = ServiceToken(TEST_JWT_SECRET, subject="service:rules", issuer="loom")
    channel = open_channel(target, token=token, deadline_seconds=0.3)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await batch_pb2_grpc.BatchServiceStub(channel).ListBatches(batch_pb2.ListBatchesRequest())
    finally:
        await channel.close()
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_call_made_while_serving_a_caused_call_carries_its_causation_on(flaky):
    """A rule's trigger_workflow -> the scheduler's job -> batch: the chain follows the calls."""
    target, _ = flaky
    chain = '[{"rule_id":"r","execution_id":"x","event_id":"e"}]'
    channel = open_channel(target, token=ServiceToken(TEST_JWT_SECRET, subject="service:scheduler", issuer="loom"))

    async def serving_a_caused_call() -> str:
        causation.enter({causation.METADATA_KEY: chain})
        reply = await batch_pb2_grpc.BatchServiceStub(channel).GetSupplier(
            batch_pb2.GetSupplierRequest(supplier_id=str(uuid.uuid4()))
        )
        return reply.supplier.name

    try:
        assert await asyncio.create_task(serving_a_caused_call()) == chain  # its own context, as each served call has
        assert causation.current() == ""
    finally:
        await channel.close()
