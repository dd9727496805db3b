"""What tracing costs a Loom call when it is on and exporting.

Batch service processes on one database, the same code: one with
`OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP receiver run by the benchmark (so
every call makes a server span and a span per SQL statement, and a batch processor
ships them), one without, and two traced ones with the standard sampler variables set:
one that samples nothing (`always_off`: what the instrumentations cost before any span is
recorded, the floor under any sampling) and one that keeps a tenth of the traces
(`parentbased_traceidratio` 0.1, what docs/observability.md advises at high rates). 32
concurrent clients call `ListSuppliers` (auth, one SQL read, a small reply) on each in
turn, round after round.

Figures:
- `foundation.interceptor.traced`: calls/s, traced / untraced. Wall clock: on a shared
  machine it moves with whatever else runs, and the load generator shares the cores.
- `foundation.interceptor.traced.cpu`: the service process's CPU time per call (utime +
  stime of all its threads, from /proc, so the batch processor's export thread counts),
  ratio untraced / traced so that, as above, 1.0 means free and higher is better. Each
  run's window for both processes spans the whole round (both variants' calls), so spans
  the traced one exports after its calls finished still count against it.

- `foundation.interceptor.traced.unsampled`, `foundation.interceptor.traced.sampled10`:
  CPU per call of those two, ratio untraced / each.

The load average is noted in `vs`: a row measured on a busy machine says so.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from loom.batch.v1 import batch_pb2

from bench.gateway_vs_envoy import cpu_seconds
from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from tests.support import ROOT, ServiceProcess, auth, free_port, process_env, stub_for, wait_serving

CLIENTS = 32
# Each traced variant's environment beyond the untraced one's.
VARIANTS: dict[str, dict[str, str]] = {
    "untraced": {},
    "traced": {},
    "unsampled": {"OTEL_TRACES_SAMPLER": "always_off"},
    "sampled10": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
}


@benchmark(
    "foundation.interceptor.traced",
    figures=(
        "foundation.interceptor.traced",
        "foundation.interceptor.traced.cpu",
        "foundation.interceptor.traced.unsampled",
        "foundation.interceptor.traced.sampled10",
    ),
)
async def traced_overhead(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TRACED_CALLS", full=10_000, quick=1_000)
    request = batch_pb2.ListSuppliersRequest(page_size=1)
    metadata = auth("admin")
    async with AsyncExitStack() as stack:
        endpoint, port_file = await _collector_process(stack)
        targets, pids = {}, {}
        for variant, sampling in VARIANTS.items():
            port = free_port()
            extra = {} if variant == "untraced" else {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **sampling}
            env = process_env("batch", ctx.database_url, port, LOOM_OUTBOX_DISPATCH="false", **extra)
            process = ServiceProcess("batch", env).start()
            stack.callback(process.terminate)
            assert process.process is not None
            targets[variant], pids[variant] = f"127.0.0.1:{port}", process.process.pid
            await wait_serving(targets[variant])
        stubs = {name: await stack.enter_async_context(stub_for("batch", target)) for name, target in targets.items()}
        for stub in stubs.values():  # connections pooled, code paths warm, before anything is counted
            await closed_loop(
                lambda _, stub=stub: stub.ListSuppliers(request, metadata=metadata), clients=CLIENTS, total=CLIENTS * 4
            )
        await asyncio.sleep(1.5)
        exported_before = _exported(port_file)
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu_per_call: dict[str, list[float]] = {v: [] for v in VARIANTS}
        loads = []
        cpu = {v: cpu_seconds(pid) for v, pid in pids.items()}
        for run in range(ctx.runs):
            for variant, stub in stubs.items():
                rate, _ = await closed_loop(
                    lambda _, stub=stub: stub.ListSuppliers(request, metadata=metadata), clients=CLIENTS, total=total
                )
                rates[variant].append(rate)
            loads.append(os.getloadavg()[0])
            if run == ctx.runs - 1:
                await asyncio.sleep(1.5)  # the batch span processor and the receiver's count catch up
            for variant, pid in pids.items():
                now = cpu_seconds(pid)
                cpu_per_call[variant].append((now - cpu[variant]) / total)
                cpu[variant] = now
        exported = _exported(port_file) - exported_before
    if exported < total * ctx.runs:
        raise RuntimeError(f"the traced service exported {exported} spans for {total * ctx.runs} calls")
    load = f"load average {median(loads):.1f} on {os.cpu_count()} cores"
    value, baseline = median(rates["traced"]), median(rates["untraced"])
    traced_cpu, untraced_cpu = median(cpu_per_call["traced"]) * 1e6, median(cpu_per_call["untraced"]) * 1e6
    return [
        Figure("foundation.interceptor.traced", value, "calls/s", value / baseline, f"same service, tracing off; {load}"),
        Figure(
            "foundation.interceptor.traced.cpu",
            traced_cpu,
            "us/call",
            untraced_cpu / traced_cpu,
            f"same service's CPU per call, tracing off (ratio = untraced / traced); {load}",
        ),
        *(
            Figure(
                f"foundation.interceptor.traced.{variant}",
                median(cpu_per_call[variant]) * 1e6,
                "us/call",
                untraced_cpu / (median(cpu_per_call[variant]) * 1e6),
                f"same service's CPU per call, tracing off; {sampling['OTEL_TRACES_SAMPLER']} "
                f"{sampling.get('OTEL_TRACES_SAMPLER_ARG', '')}".rstrip() + f"; {load}",
            )
            for variant, sampling in VARIANTS.items()
            if sampling
        ),
    ]


def _exported(port_file: Path) -> int:
    """Spans the receiver has counted so far (it rewrites the count every half second)."""
    count = Path(f"{port_file}.count")
    return int(count.read_text() or 0) if count.exists() else 0


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
