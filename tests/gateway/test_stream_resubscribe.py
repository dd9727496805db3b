"""SSE streams outlive a backend stream cut with UNAVAILABLE: the gateway opens the call
again (on another replica, when there is one) and the client's stream goes on.
tests/deploy/test_replicated_twin.py kills the serving replica with kill -9."""

from __future__ import annotations

import json

import grpc
import pytest
from loom.batch.v1 import batch_pb2

from libs.settings import SERVICE_NAMES
from services.gateway.streams import RESUBSCRIBE_ATTEMPTS
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
    settings = gateway_settings(dict.fromkeys(SERVICE_NAMES, backend.target))
    async with run_gateway(settings) as running:
        yield running


def events_of(text: str) -> list[str]:
    return [block for block in text.split("\n\n") if block and not block.startswith(":")]


def quantities(events: list[str]) -> list[str]:
    return [json.loads(e.removeprefix("data: "))["batch"]["currentQuantity"] for e in events if e.startswith("data: ")]


def batch(quantity: int) -> batch_pb2.WatchBatchResponse:
    return batch_pb2.WatchBatchResponse(batch=batch_pb2.Batch(batch_id="b1", current_quantity=quantity))


async def test_a_stream_cut_with_unavailable_is_resubscribed_and_the_client_misses_nothing(backend, gateway):
    subscriptions = []

    async def watch(request, context):
        subscriptions.append(request)
        if len(subscriptions) == 1:
            yield batch(10)
            yield batch(20)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica gone")
        yield batch(20)  # a new subscription starts with the batch as it is now
        yield batch(30)

    backend.answer("WatchBatch", watch)
    async with gateway.client() as http, http.stream("GET", "/v1/batches/b1:watch", headers=ADMIN) as reply:
        assert reply.status_code == 200
        text = "".join([chunk async for chunk in reply.aiter_text()])
    events = events_of(text)
    assert quantities(events) == ["10", "20", "30"]  # the repeated 20 is dropped
    assert events[-1].startswith("event: end")
    assert len(subscriptions) == 2


async def test_a_stream_whose_backend_stays_unavailable_ends_with_an_error_event(backend, gateway):
    subscriptions = []

    async def watch(request, context):
        subscriptions.append(request)
        if len(subscriptions) == 1:
            yield batch(10)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no replica left")

    backend.answer("WatchBatch", watch)
    async with gateway.client(timeout=40) as http, http.stream("GET", "/v1/batches/b1:watch", headers=ADMIN) as reply:
        text = "".join([chunk async for chunk in reply.aiter_text()])
    events = events_of(text)
    assert quantities(events) == ["10"]
    assert json.loads(events[-1].split("data: ", 1)[1])["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert len(subscriptions) > RESUBSCRIBE_ATTEMPTS  # each attempt, and the channel's own retries of it
