"""The shared server bootstrap: health, reflection, auth, errors and call logs."""

import asyncio
import uuid

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from loom.batch.v1 import batch_pb2, batch_pb2_grpc

from libs.bootstrap import ServiceSpec, start
from services.batch.settings import BatchSettings
from tests.support import ServiceProcess, auth, free_port, process_env, serve, settings_for, wait_serving


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


class SlowServicer(batch_pb2_grpc.BatchServiceServicer):
    async def GetBatch(self, request, context):
        await asyncio.sleep(0.5)
        return batch_pb2.GetBatchResponse(batch=batch_pb2.Batch(batch_id=request.batch_id))


async def _slow_setup(context) -> None:
    batch_pb2_grpc.add_BatchServiceServicer_to_server(SlowServicer(), context.server)


IN_FLIGHT = str(uuid.uuid4())  # batch ids are UUIDs: the interceptor refuses others before the servicer
SLOW = ServiceSpec("batch", BatchSettings, ("loom.batch.v1.BatchService",), _slow_setup, uses_database=False)


async def test_stopping_drains_in_flight_calls_and_refuses_new_ones():
    running = await start(SLOW, settings_for("batch", database_url=None), port=0)
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        in_flight = asyncio.ensure_future(
            stub.GetBatch(batch_pb2.GetBatchRequest(batch_id=IN_FLIGHT), metadata=auth("admin"), timeout=10)
        )
        await asyncio.sleep(0.1)
        await running.stop(grace=5)
        assert (await in_flight).batch.batch_id == IN_FLIGHT
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetBatch(batch_pb2.GetBatchRequest(batch_id=str(uuid.uuid4())), metadata=auth("admin"), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.e2e
async def test_a_service_process_serves_metrics_and_exits_cleanly_on_sigterm(database_url):
    port, metrics_port = free_port(), free_port()
    env = process_env("batch", database_url, port, LOOM_BATCH_METRICS_PORT=str(metrics_port))
    process = ServiceProcess("batch", env).start()
    try:
        await wait_serving(f"127.0.0.1:{port}")
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'loom_grpc_server_handled_total{grpc_code="OK",grpc_method="/grpc.health.v1.Health/Check"}' in metrics
    finally:
        assert process.terminate() == 0
