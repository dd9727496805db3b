"""Tracking ingestion and aggregation, each against a ceiling measured in the same run.

Servers run in processes of their own and the load comes from this one, as in production;
requests and COPY payloads are built before the clock starts, so the client's own work
is the same small share of the machine on both sides of a ratio.

- tracking.ingest.unary: TrackInteraction from 32 concurrent clients (each call waits for
  its group commit) vs an empty TrackInteraction handler on the same server bootstrap.
- tracking.ingest.batch: TrackInteractions of 1,000 events vs a raw COPY of the same
  enriched rows into a twin of the interactions table (partitioned by month the same way,
  same keys and indexes), 1,000 rows a commit.
- tracking.aggregate.1m: AggregatePopularity over 1M stored interactions (a full first run)
  vs one GROUP BY scan of the same rows.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import psycopg
from loom.tracking.v1 import tracking_pb2 as pb
from loom.tracking.v1 import tracking_pb2_grpc

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median, percentile
from libs.bootstrap import ServiceSpec, main
from libs.clients import open_channel
from libs.scratch_db import plain_url
from services.tracking.ids import uuid7
from services.tracking.settings import TrackingSettings
from services.tracking.store.partitions import Partitioned, create_default_sql, create_partition_sql, months_ahead
from tests.support import ROOT, auth, free_port, process_env, serve, stub_for, wait_serving

CLIENTS = 32
BATCH = 1000
BATCH_CLIENTS = 4
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
COLUMNS = (
    "id", "occurred_at", "type", "product_id", "session_id", "user_id", "anonymous_id", "client_event_id",
    "page", "referrer_host", "country", "browser", "os", "device", "ip_hash",
)


class EmptyTracking(tracking_pb2_grpc.TrackingServiceServicer):
    async def TrackInteraction(self, request, context):
        return pb.TrackInteractionResponse()


async def _empty_setup(context) -> None:
    tracking_pb2_grpc.add_TrackingServiceServicer_to_server(EmptyTracking(), context.server)


EMPTY = ServiceSpec("tracking", TrackingSettings, ("loom.tracking.v1.TrackingService",), _empty_setup, uses_database=False)
EMPTY_MODULE = "bench.tracking_ingest"  # `python -m bench.tracking_ingest` serves EMPTY


@asynccontextmanager
async def server_process(module: str, database_url: str) -> AsyncIterator[str]:
    """Runs `python -m module` (a service's main) as its own OS process; yields its target."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module], env={**os.environ, **process_env("tracking", database_url, port)},
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        await wait_serving(target)
        yield target
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)


async def raw_calls(target: str, method: str, payloads: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Calls/s and latencies of a unary method fed pre-serialized requests (replies left unparsed)."""
    channel = open_channel(target)
    try:
        call = channel.unary_unary(f"/loom.tracking.v1.TrackingService/{method}")
        return await closed_loop(lambda i: call(payloads[i], timeout=60), clients=clients, total=len(payloads))
    finally:
        await channel.close()


def _interaction(run: str, n: int) -> pb.Interaction:
    return pb.Interaction(
        type=1 + n % 8,
        product_id=f"p{n % 997}",
        session_id=f"{run}-s{n}",
        client_event_id=f"{run}-e{n}",
        user_agent=USER_AGENT,
        referrer="https://www.google.com/search?q=tees",
        page=f"/products/p{n % 997}",
    )


async def _unary(target: str, run: str, total: int) -> tuple[float, float]:
    payloads = [pb.TrackInteractionRequest(interaction=_interaction(run, n)).SerializeToString() for n in range(total)]
    rate, latencies = await raw_calls(target, "TrackInteraction", payloads, CLIENTS)
    return rate, percentile(latencies, 99) * 1000


@benchmark("tracking.ingest.unary", figures=("tracking.ingest.unary", "tracking.ingest.unary.p99"))
async def ingest_unary(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TRACKING_UNARY_CALLS", full=10_000, quick=1_000)
    rates, p99s, empty_rates, empty_p99s = [], [], [], []
    async with (
        server_process(EMPTY_MODULE, ctx.database_url) as empty,
        server_process("services.tracking", ctx.database_url) as tracking,
    ):
        await _unary(empty, "warm", 200)
        await _unary(tracking, f"warm-{os.getpid()}", 200)
        for run in range(ctx.runs):
            rate, p99 = await _unary(empty, f"e{run}", total)
            empty_rates.append(rate)
            empty_p99s.append(p99)
            rate, p99 = await _unary(tracking, f"u{run}-{os.getpid()}", total)
            rates.append(rate)
            p99s.append(p99)
    rate, p99 = median(rates), median(p99s)
    return [
        Figure("tracking.ingest.unary", rate, "events/s", rate / median(empty_rates), "empty handler"),
        Figure("tracking.ingest.unary.p99", p99, "ms", p99 / median(empty_p99s), "empty handler p99"),
    ]


def _copy_payload(batch: list[pb.Interaction], now: datetime) -> bytes:
    """The rows ingestion stores for these events, in COPY text format (enrichment done
    once, as the service caches it)."""
    ip_hash = "\\\\x" + os.urandom(16).hex()
    stamp = now.isoformat()
    return "".join(
        f"{uuid7()}\t{stamp}\t{i.type}\t{i.product_id}\t{i.session_id}\t\\N\t\\N\t{i.client_event_id}\t{i.page}\t"
        f"www.google.com\tUS\tChrome\tWindows\tdesktop\t{ip_hash}\n"
        for i in batch
    ).encode()


async def _copy(url: str, table: str, payloads: list[bytes]) -> float:
    """Rows/s of COPY, BATCH_CLIENTS connections, one commit per batch."""
    queue = iter(payloads)

    async def writer() -> None:
        async with await psycopg.AsyncConnection.connect(plain_url(url)) as conn:
            for payload in queue:
                async with conn.cursor() as cursor:
                    async with cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                        await copy.write(payload)
                await conn.commit()

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(BATCH_CLIENTS)))
    return len(payloads) * BATCH / (time.perf_counter() - started)


@benchmark("tracking.ingest.batch", figures=("tracking.ingest.batch",))
async def ingest_batch(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TRACKING_BATCH_EVENTS", full=200_000, quick=20_000)
    url = ctx.database_url
    twin = Partitioned("bench_copy", "occurred_at")
    async with await psycopg.AsyncConnection.connect(plain_url(url), autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS tracking.bench_copy")
        await conn.execute(
            "CREATE TABLE tracking.bench_copy (LIKE tracking.interactions INCLUDING ALL) PARTITION BY RANGE (occurred_at)"
        )
        for statement in [create_partition_sql(twin, m) for m in months_ahead(datetime.now(UTC))] + [create_default_sql(twin)]:
            await conn.execute(statement)
    rates, copy_rates = [], []
    async with server_process("services.tracking", url) as tracking:
        for run in range(ctx.runs):
            tag = f"b{run}-{os.getpid()}"
            events = [_interaction(tag, n) for n in range(total)]
            batches = [events[i : i + BATCH] for i in range(0, total, BATCH)]
            copies = [_copy_payload(b, datetime.now(UTC)) for b in batches]
            requests = [pb.TrackInteractionsRequest(interactions=b).SerializeToString() for b in batches]
            copy_rates.append(await _copy(url, "tracking.bench_copy", copies))
            rate, _ = await raw_calls(tracking, "TrackInteractions", requests, BATCH_CLIENTS)
            rates.append(rate * BATCH)
    async with await psycopg.AsyncConnection.connect(plain_url(url), autocommit=True) as conn:
        await conn.execute("DROP TABLE tracking.bench_copy")
    rate = median(rates)
    return [
        Figure("tracking.ingest.batch", rate, "events/s", rate / median(copy_rates), "raw COPY of the same rows (partitioned)")
    ]


async def _load_synthetic(url: str, total: int, as_of: datetime) -> None:
    """total interactions over 30 days: sessions of 10 events over about 5 products, a
    skewed catalogue of 5,000 products, one session in five signed in."""
    rng = random.Random(7)
    products = [f"prod-{n}" for n in range(5000)]
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(products))]
    ip_hash = os.urandom(16)
    async with await psycopg.AsyncConnection.connect(plain_url(url)) as conn:
        async with conn.cursor() as cursor:
            async with cursor.copy(
                "COPY tracking.interactions (id, occurred_at, type, product_id, session_id, user_id, ip_hash) FROM STDIN"
            ) as copy:
                for session in range(total // 10):
                    started = as_of - timedelta(seconds=rng.uniform(600, 30 * 86400))
                    user = f"user-{rng.randrange(total // 50)}" if session % 5 == 0 else None
                    basket = rng.choices(products, weights, k=5)
                    for n in range(10):
                        await copy.write_row(
                            (uuid7(), started + timedelta(seconds=n * 20), 1 + n % 8, basket[n % 5],
                             f"sess-{session}", user, ip_hash)
                        )
        await conn.commit()
        await conn.set_autocommit(True)
        await conn.execute("VACUUM ANALYZE tracking.interactions")


@benchmark("tracking.aggregate.1m", figures=("tracking.aggregate.1m",))
async def aggregate_1m(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_TRACKING_AGGREGATE_EVENTS", full=1_000_000, quick=100_000)
    url = ctx.database_url
    as_of = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(plain_url(url), autocommit=True) as conn:
        await conn.execute("TRUNCATE tracking.interactions, tracking.session_users")
    await _load_synthetic(url, total, as_of)
    seconds, scans = [], []
    async with serve("tracking", url) as tracking, stub_for("tracking", tracking.target) as stub:
        for run in range(ctx.runs):
            async with await psycopg.AsyncConnection.connect(plain_url(url), autocommit=True) as conn:
                await conn.execute(
                    "TRUNCATE tracking.aggregation_state, tracking.product_daily, tracking.actor_products_daily,"
                    " tracking.user_products_daily, tracking.session_hours, tracking.funnel_steps,"
                    " tracking.product_popularity, tracking.product_pairs"
                )
                started = time.perf_counter()
                await conn.execute("SELECT product_id, count(*) FROM tracking.interactions GROUP BY product_id")
                scans.append(time.perf_counter() - started)
            request = pb.AggregatePopularityRequest(request_id=f"bench-{run}-{os.getpid()}")
            request.as_of_time.FromDatetime(as_of)
            started = time.perf_counter()
            reply = await stub.AggregatePopularity(request, metadata=auth("admin"), timeout=600)
            seconds.append(time.perf_counter() - started)
            assert reply.interactions_scanned == total, reply
    value = median(seconds)
    return [Figure("tracking.aggregate.1m", value, "s", value / median(scans), "one GROUP BY scan of the rows")]


if __name__ == "__main__":
    main(EMPTY)
