"""PlaceOrder through gRPC, 16 concurrent clients, against the same writes as raw SQL.

Subject: PlaceOrder calls to the batch service running as its own OS process, as in
production (auth, validation, idempotency, batch search, pricing, group commit); the
load comes from this process, so client and server do not share one interpreter.
Baseline: the same writes (idempotency key, batch quantity, order, contribution,
outbox event, stored answer) as one raw SQL transaction per order from 16 connections
of this process, each against a batch known in advance. `hot`: every order in one
category; `spread`: orders round-robin over 100 categories.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import psycopg
from loom.batch.v1 import batch_pb2 as pb

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median, percentile
from libs.scratch_db import plain_url
from tests.support import ServiceProcess, auth, free_port, process_env, stub_for, wait_serving

CLIENTS = 16
SPREAD_CATEGORIES = 100
ADMIN = auth("admin")
BUYER = auth("buyer", "bench-buyer")
PLACE_ORDER = "/loom.batch.v1.BatchService/PlaceOrder"

RAW_ORDER = """
WITH b AS (
    UPDATE batch.batches SET current_quantity = current_quantity + 2, style_count = style_count + 1,
        order_count = order_count + 1, update_time = now()
    WHERE id = %(batch_id)s AND current_quantity + 2 <= capacity AND style_count + 1 <= style_limit
    RETURNING *
), o AS (
    INSERT INTO batch.orders (id, buyer_id, category, quantity, style, status, batch_id, supplier_id, currency,
                              supplier_unit_price, margin_percent, unit_price, subtotal, margin_amount, total)
    SELECT %(order_id)s, 'bench-buyer', b.category, 2, '{"style_count": 1}', 'placed', b.id, b.supplier_id, 'USD',
           5, 15, 5.75, 10, 1.5, 11.5 FROM b RETURNING *
), c AS (
    INSERT INTO batch.contributions (id, batch_id, order_id, quantity, style_count, amount)
    SELECT %(contribution_id)s, o.batch_id, o.id, 2, 1, o.subtotal FROM o RETURNING id
), e AS (
    INSERT INTO batch.outbox (type, data)
    SELECT 'order.placed', jsonb_build_object('order', batch.order_json(o::batch.orders),
                                              'batch', batch.batch_json(b::batch.batches)) FROM o, b
)
SELECT b.id FROM b, c
"""


@asynccontextmanager
async def _batch_process(database_url: str) -> AsyncIterator[str]:
    """The batch service as its own OS process (outbox delivery off: no rules service); yields its target."""
    port = free_port()
    env = process_env("batch", database_url, port, LOOM_OUTBOX_DISPATCH="false", LOOM_DB_POOL_SIZE=str(CLIENTS))
    server = ServiceProcess("batch", env).start()
    target = f"127.0.0.1:{port}"
    try:
        await wait_serving(target)
        yield target
    finally:
        await asyncio.to_thread(server.terminate, 30)


async def _suppliers(stub, categories: list[str]) -> None:
    for category in categories:
        await stub.CreateSupplier(
            pb.CreateSupplierRequest(
                request_id=uuid.uuid4().hex,
                supplier=pb.Supplier(
                    name="Bench", categories=[category], moq=1_000, capacity=1_000_000,
                    price_tiers=[pb.PriceTier(min_quantity=1, unit_price="5.00")], lead_time_days=7, rating=4,
                    active=True, max_styles_per_batch=1_000,
                ),
            ),
            metadata=ADMIN,
        )


def order_payloads(categories: list[str], total: int) -> list[bytes]:
    """`total` serialized PlaceOrder requests of 2 units, spread round the categories."""
    return [
        pb.PlaceOrderRequest(
            request_id=uuid.uuid4().hex, category=categories[i % len(categories)], quantity=2,
            style=pb.StyleDetails(style_count=1),
        ).SerializeToString()
        for i in range(total)
    ]


async def _through_grpc(target: str, categories: list[str], total: int) -> tuple[float, list[float]]:
    """Requests are serialized before the clock starts and answers left unparsed, on a bare
    channel: the load generator's own protobuf and interceptor work is not the service's,
    and it shares the machine with the service and PostgreSQL (as the raw SQL side's
    statements are built by the driver alone)."""
    payloads = order_payloads(categories, total)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(PLACE_ORDER)
        return await closed_loop(lambda i: call(payloads[i], metadata=BUYER, timeout=60), clients=CLIENTS, total=total)


def _raw_batches(url: str, categories: list[str], total: int) -> list[str]:
    """Enough filling batches for the raw writes: one per category per 1000 orders (the style limit)."""
    per_category = -(-total // len(categories) // 1_000) or 1
    with psycopg.connect(url, autocommit=True) as conn:
        supplier = conn.execute("SELECT id FROM batch.suppliers LIMIT 1").fetchone()[0]
        ids = []
        for category in categories:
            for _ in range(per_category):
                ids.append(
                    conn.execute(
                        """
                        INSERT INTO batch.batches (id, category, supplier_id, status, target_quantity, capacity,
                                                   style_limit, window_open_time, window_close_time, unit_price)
                        VALUES (gen_random_uuid(), %s, %s, 'filling', 1000, 1000000, 1000, now(),
                                now() + interval '14 days', 5)
                        RETURNING id
                        """,
                        (f"raw_{category}", supplier),
                    ).fetchone()[0]
                )
    return ids


async def _raw_sql(url: str, batch_ids: list[str], categories: int, total: int) -> tuple[float, list[float]]:
    connections = [await psycopg.AsyncConnection.connect(url) for _ in range(CLIENTS)]
    free: asyncio.Queue = asyncio.Queue()
    for conn in connections:
        free.put_nowait(conn)
    per_category = len(batch_ids) // categories

    async def one(i: int) -> None:
        key = f"{uuid.uuid4().hex}-{i}"
        category, n = i % categories, i // categories
        batch_id = batch_ids[category * per_category + min(n // 1_000, per_category - 1)]
        conn = await free.get()
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO batch.idempotency_keys (method, request_id, request_hash) VALUES ('raw', %s, '\\x00')",
                    (key,),
                )
                await conn.execute(
                    RAW_ORDER, {"batch_id": batch_id, "order_id": uuid.uuid4(), "contribution_id": uuid.uuid4()}
                )
                await conn.execute(
                    "UPDATE batch.idempotency_keys SET response = '\\x01' WHERE method = 'raw' AND request_id = %s",
                    (key,),
                )
        finally:
            free.put_nowait(conn)

    try:
        return await closed_loop(one, clients=CLIENTS, total=total)
    finally:
        for conn in connections:
            await conn.close()


@benchmark(
    "batch.place_order",
    figures=(
        "batch.place_order.hot", "batch.place_order.hot.p50_ms", "batch.place_order.hot.p99_ms",
        "batch.place_order.spread", "batch.place_order.spread.p50_ms", "batch.place_order.spread.p99_ms",
    ),
)
async def place_order(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_PLACE_ORDER_N", full=5_000, quick=500)
    url = plain_url(ctx.database_url)
    figures = []
    async with _batch_process(ctx.database_url) as target, stub_for("batch", target) as stub:
        warm = [f"bench_warm_{uuid.uuid4().hex[:6]}"]  # connections, prepared statements, first batches
        await _suppliers(stub, warm)
        await _through_grpc(target, warm, min(total, 500))
        for shape, count in (("hot", 1), ("spread", SPREAD_CATEGORIES)):
            rates, raw_rates, p50s, p99s, raw_p50s, raw_p99s = [], [], [], [], [], []
            for run in range(ctx.runs):
                categories = [f"bench_{shape}_{run}_{i}_{uuid.uuid4().hex[:6]}" for i in range(count)]
                await _suppliers(stub, categories)
                raw_ids = await asyncio.to_thread(_raw_batches, url, categories, total)
                raw_rate, raw_latencies = await _raw_sql(url, raw_ids, count, total)
                rate, latencies = await _through_grpc(target, categories, total)
                rates.append(rate)
                raw_rates.append(raw_rate)
                p50s.append(percentile(latencies, 50) * 1000)
                p99s.append(percentile(latencies, 99) * 1000)
                raw_p50s.append(percentile(raw_latencies, 50) * 1000)
                raw_p99s.append(percentile(raw_latencies, 99) * 1000)
            name = f"batch.place_order.{shape}"
            value, baseline = median(rates), median(raw_rates)
            figures += [
                Figure(name, value, "orders/s", value / baseline, "raw SQL transaction per order"),
                Figure(f"{name}.p50_ms", median(p50s), "ms", median(p50s) / median(raw_p50s), "raw SQL p50"),
                Figure(f"{name}.p99_ms", median(p99s), "ms", median(p99s) / median(raw_p99s), "raw SQL p99"),
            ]
    return figures
