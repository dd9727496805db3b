"""The shared server bootstrap: health, reflection, auth, errors and call logs."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support import serve


@pytest.fixture(scope="module")
async def batch(database_url):
    async with serve("batch", database_url) as running:
        yield running


async def test_every_service_reports_serving_over_grpc_health(database_url):
    for service in ("batch", "rules", "tracking", "scheduler"):
        async with serve(service, database_url) as running, grpc.aio.insecure_channel(running.target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=f"loom.{service}.v1.{service.capitalize()}Service")
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(batch):
    async with grpc.aio.insecure_channel(batch.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for response in responses:
            names = {s.name for s in response.list_services_response.service}
            break
    assert "loom.batch.v1.BatchService" in names
