"""A dependency that stops answering: callers fail within their deadline and do not pile up.

The black hole is a gRPC server that accepts every call and never answers. The
gateway and the scheduler are pointed at it as their batch service.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from loom.scheduler.v1 import scheduler_pb2

from libs.scratch_db import ROOT
from tests.support import TEST_JWT_SECRET, auth, free_port, serve, stub_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

DEADLINE_SECONDS = 1.0
SLACK_SECONDS = 3.0  # a loaded 2-core machine
CONCURRENT_CALLS = 40


class BlackHole(grpc.GenericRpcHandler):
    """Accepts any unary call and waits forever; counts the calls still held open."""

    def __init__(self) -> None:
        self.open_calls = 0
        self.received = 0

    def service(self, handler_call_details):
        async def hang(request, context):
            self.open_calls += 1
            self.received += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.open_calls -= 1

        return grpc.unary_unary_rpc_method_handler(hang)


@pytest.fixture
async def black_hole():
    hole = BlackHole()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((hole,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    hole.target = f"127.0.0.1:{port}"
    yield hole
    await server.stop(0)


async def eventually_zero(read, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while read() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return read()


async def test_the_gateway_answers_504_within_its_deadline_and_releases_every_backend_call(black_hole):
    port = free_port()
    env = {
        **os.environ,
        "LOOM_JWT_SECRET": TEST_JWT_SECRET,
        "LOOM_GATEWAY_PORT": str(port),
        "LOOM_GATEWAY_METRICS_PORT": "0",
        "LOOM_BATCH_TARGET": black_hole.target,
        "LOOM_DEFAULT_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "LOOM_LOG_LEVEL": "warning",
    }
    gateway = subprocess.Popen([sys.executable, "-m", "libs.cli", "serve", "gateway"], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await http.get("/openapi.json")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and gateway.poll() is None, "gateway did not start"
                    await asyncio.sleep(0.2)
            headers = {"authorization": auth("admin")[0][1]}

            async def timed_call() -> tuple[int, float]:
                started = time.monotonic()
                reply = await http.get("/v1/batches", headers=headers)
                return reply.status_code, time.monotonic() - started

            started = time.monotonic()
            results = await asyncio.gather(*(timed_call() for _ in range(CONCURRENT_CALLS)))
            burst = time.monotonic() - started
        assert {status for status, _ in results} == {504}
        assert max(elapsed for _, elapsed in results) < DEADLINE_SECONDS + SLACK_SECONDS
        assert burst < DEADLINE_SECONDS + SLACK_SECONDS, "calls waited on each other instead of failing together"
        assert black_hole.received >= CONCURRENT_CALLS
        # the deadline travelled with the calls: the black hole saw each one cancelled
        assert await eventually_zero(lambda: black_hole.open_calls, SLACK_SECONDS) == 0
    finally:
        gateway.terminate()
        gateway.wait(20)


async def test_a_scheduler_job_calling_a_silent_service_fails_within_its_deadline(black_hole, database_url):
    async with serve("scheduler", database_url, batch_target=black_hole.target,
                     scheduler_job_timeout_seconds=DEADLINE_SECONDS) as scheduler:
        async with stub_for("scheduler", scheduler.target) as stub:
            started = time.monotonic()
            reply = await stub.RunJobNow(
                scheduler_pb2.RunJobNowRequest(request_id=f"slow-{time.time_ns()}", job_name="capture-price-snapshot"),
                metadata=auth("admin"),
            )
            run = reply.run
            while run.status == scheduler_pb2.JOB_RUN_STATUS_RUNNING and time.monotonic() - started < 30:
                await asyncio.sleep(0.05)
                run = (await stub.GetJobRun(scheduler_pb2.GetJobRunRequest(run_id=run.run_id), metadata=auth("admin"))).run
            elapsed = time.monotonic() - started
    assert run.status in (scheduler_pb2.JOB_RUN_STATUS_FAILED, scheduler_pb2.JOB_RUN_STATUS_DEAD_LETTERED), run
    assert "DEADLINE" in run.error.upper()
    assert elapsed < DEADLINE_SECONDS + SLACK_SECONDS
    assert await eventually_zero(lambda: black_hole.open_calls, SLACK_SECONDS) == 0
