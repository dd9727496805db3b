"""What mutual TLS costs per call: the same Loom server and calls, with and without it.

Two batch servers in one process, one plaintext and one demanding client
certificates (`loom certs` material in a temporary directory); health Checks
through the full interceptor from 32 concurrent clients on one channel each,
runs interleaved so the shared machine's noise falls on both sides alike.
The handshake happens once per channel, so this measures the steady-state
cost of encrypting and authenticating every frame.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from libs import cli, tls
from libs.clients import open_channel
from libs.settings import Settings
from tests.support import serve

CLIENTS = 32


async def _calls_per_second(target: str, credentials: grpc.ChannelCredentials | None, total: int) -> float:
    channel = open_channel(target, credentials=credentials)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        await stub.Check(request)  # the handshake is not what is measured
        rate, _ = await closed_loop(lambda _: stub.Check(request), clients=CLIENTS, total=total)
        return rate
    finally:
        await channel.close()


@benchmark("foundation.interceptor.tls", figures=("foundation.interceptor.tls",))
async def tls_overhead(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TLS_CALLS", full=20_000, quick=2_000)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        cli.make_certs(directory)
        credentials = tls.channel_credentials(Settings(**tls.tls_settings(directory, "rules")))
        async with (
            serve("batch", ctx.database_url) as plain,
            serve("batch", ctx.database_url, **tls.tls_settings(directory, "batch")) as secured,
        ):
            plain_rates, tls_rates = [], []
            for _ in range(ctx.runs):
                plain_rates.append(await _calls_per_second(plain.target, None, total))
                tls_rates.append(await _calls_per_second(secured.target, credentials, total))
    value, baseline = median(tls_rates), median(plain_rates)
    return [Figure("foundation.interceptor.tls", value, "calls/s", value / baseline, "the same server in plaintext")]
