"""Two replicas of a service against one, same run, same client load.

Each service runs as two OS processes on the bench database; the baseline sends the
load to the first alone, the subject to both through one round-robin channel over a
multi-address target (`ipv4:a,b`), as every Loom client reaches replicas. Runs
alternate which side goes first. On 2 cores shared with PostgreSQL and the load
generator the ratio is expected near 1: the figure catches replicas that make things
slower (contention between them, a balancer that pins one), not a speed-up.

- scale.place_order.replicas2: PlaceOrder, 16 clients, orders spread over 100 categories
  (as batch.place_order.spread; one hot batch would serialise both replicas on its row).
- scale.track.replicas2: TrackInteraction, 32 clients, each call waiting for its group commit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from bench.batch_place_order import BUYER, CLIENTS, PLACE_ORDER, SPREAD_CATEGORIES, _suppliers, order_payloads
from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from bench.tracking_ingest import _unary
from libs.clients import open_channel
from tests.support import ServiceProcess, free_port, process_env, stub_for, wait_serving

REPLICAS = 2


@asynccontextmanager
async def replicas(service: str, database_url: str, **env: str) -> AsyncIterator[tuple[str, str]]:
    """Two processes of `service`; yields the first's target and the target over both."""
    ports = [free_port() for _ in range(REPLICAS)]
    processes = [ServiceProcess(service, process_env(service, database_url, port, **env)).start() for port in ports]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    try:
        await asyncio.gather(*(wait_serving(address, timeout=60) for address in addresses))
        yield addresses[0], "ipv4:" + ",".join(addresses)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.terminate, 30) for p in processes))


async def one_against_two(
    ctx: BenchContext, measure: Callable[[str, str], Awaitable[float]], one: str, both: str
) -> tuple[float, float]:
    """Median rates on one replica and on both, runs alternating which side goes first."""
    ones: list[float] = []
    twos: list[float] = []
    for run in range(ctx.runs):
        sides = [(one, ones), (both, twos)]
        for target, rates in sides if run % 2 == 0 else reversed(sides):
            rates.append(await measure(target, f"r{run}-{uuid.uuid4().hex[:6]}"))
    return median(ones), median(twos)


@benchmark("scale.place_order.replicas2", figures=("scale.place_order.replicas2",))
async def place_order_replicas(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_SCALE_PLACE_ORDER_N", full=3_000, quick=300)
    env = {"LOOM_OUTBOX_DISPATCH": "false", "LOOM_DB_POOL_SIZE": str(CLIENTS)}

    async def measure(target: str, tag: str) -> float:
        categories = [f"scale_{tag.replace('-', '_')}_{i}" for i in range(SPREAD_CATEGORIES)]
        async with stub_for("batch", one) as stub:
            await _suppliers(stub, categories)
        payloads = order_payloads(categories, total)
        channel = open_channel(target)
        try:
            call = channel.unary_unary(PLACE_ORDER)
            rate, _ = await closed_loop(lambda i: call(payloads[i], metadata=BUYER, timeout=60), clients=CLIENTS, total=total)
        finally:
            await channel.close()
        return rate

    async with replicas("batch", ctx.database_url, **env) as (one, both):
        await measure(both, "warm")  # connections, prepared statements, on both replicas
        single, double = await one_against_two(ctx, measure, one, both)
    return [Figure("scale.place_order.replicas2", double, "orders/s", double / single, "one batch replica")]


@benchmark("scale.track.replicas2", figures=("scale.track.replicas2",))
async def track_replicas(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_SCALE_TRACK_N", full=6_000, quick=600)

    async def measure(target: str, tag: str) -> float:
        rate, _ = await _unary(target, tag, total)
        return rate

    async with replicas("tracking", ctx.database_url) as (one, both):
        await _unary(both, f"warm-{uuid.uuid4().hex[:6]}", 400)
        single, double = await one_against_two(ctx, measure, one, both)
    return [Figure("scale.track.replicas2", double, "events/s", double / single, "one tracking replica")]
