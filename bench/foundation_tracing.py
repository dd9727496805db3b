"""What tracing costs a Loom call when it is on and exporting.

Two batch service processes on one database, the same code: one with
`OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP receiver run by the benchmark (so
every call makes a server span and a span per SQL statement, and a batch processor
ships them), one without. 32 concurrent clients call `ListSuppliers` (auth, one SQL
read, a small reply) on each in alternating runs; figure = traced / untraced calls/s.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from loom.batch.v1 import batch_pb2

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from tests.support import ROOT, ServiceProcess, auth, free_port, process_env, stub_for, wait_serving

CLIENTS = 32


@benchmark("foundation.interceptor.traced", figures=("foundation.interceptor.traced",))
async def traced_overhead(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TRACED_CALLS", full=10_000, quick=1_000)
    request = batch_pb2.ListSuppliersRequest(page_size=1)
    metadata = auth("admin")
    async with AsyncExitStack() as stack:
        endpoint, port_file = await _collector_process(stack)
        targets = {}
        for variant, extra in (
            ("untraced", {}),
            ("traced", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}),
        ):
            port = free_port()
            env = process_env("batch", ctx.database_url, port, LOOM_OUTBOX_DISPATCH="false", **extra)
            process = ServiceProcess("batch", env).start()
            stack.callback(process.terminate)
            targets[variant] = f"127.0.0.1:{port}"
            await wait_serving(targets[variant])
        stubs = {name: await stack.enter_async_context(stub_for("batch", target)) for name, target in targets.items()}
        rates: dict[str, list[float]] = {"traced": [], "untraced": []}
        for _ in range(ctx.runs):
            for variant, stub in stubs.items():
                rate, _ = await closed_loop(
                    lambda _, stub=stub: stub.ListSuppliers(request, metadata=metadata), clients=CLIENTS, total=total
                )
                rates[variant].append(rate)
        await asyncio.sleep(1.5)  # the batch span processor and the receiver's count catch up
        exported = int(Path(f"{port_file}.count").read_text() or 0)
    if exported < total:
        raise RuntimeError(f"the traced service exported {exported} spans for {total * ctx.runs} calls")
    value, baseline = median(rates["traced"]), median(rates["untraced"])
    return [Figure("foundation.interceptor.traced", value, "calls/s", value / baseline, "same service, tracing off")]


async def _collector_process(stack: AsyncExitStack) -> tuple[str, Path]:
    """An OTLP receiver in its own process, so the load generator does not pay for it."""
    port_file = Path(tempfile.mkdtemp()) / "endpoint"
    process = subprocess.Popen([sys.executable, "-m", "tests.observability.otlp", str(port_file)], cwd=ROOT)
    stack.callback(process.wait)
    stack.callback(process.terminate)
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return port_file.read_text(), port_file
        await asyncio.sleep(0.05)
    raise TimeoutError("the OTLP receiver did not start")
