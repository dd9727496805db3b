"""What the shared call interceptor (auth, logging, metrics, errors) costs per call.

A health Check through a Loom service server, against the same call to a bare
grpc.aio server with no interceptor, 32 concurrent clients on loopback.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from tests.support import serve

CLIENTS = 32


async def _calls_per_second(target: str, total: int) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        rate, _ = await closed_loop(lambda _: stub.Check(request), clients=CLIENTS, total=total)
        return rate


@benchmark("foundation.interceptor", figures=("foundation.interceptor",))
async def interceptor_overhead(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_INTERCEPTOR_CALLS", full=20_000, quick=2_000)
    bare = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), bare)
    bare_port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        async with serve("batch", ctx.database_url) as loom:
            loom_rates, bare_rates = [], []
            for _ in range(ctx.runs):
                bare_rates.append(await _calls_per_second(f"127.0.0.1:{bare_port}", total))
                loom_rates.append(await _calls_per_second(loom.target, total))
    finally:
        await bare.stop(0)
    value, baseline = median(loom_rates), median(bare_rates)
    return [Figure("foundation.interceptor", value, "calls/s", value / baseline, "bare grpc.aio server")]
