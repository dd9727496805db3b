"""Orchestrate over 10k, 100k and 1M filling batches: seconds per run, against one raw UPDATE.

Each run loads N filling batches (one order and contribution each; fills spread
1-100%, windows from 3 days past to 6 days ahead, so every rule fires on some),
times one plain UPDATE touching every filling batch (the baseline: the cheapest
set-based write over the same rows), reloads, and times the Orchestrate RPC.
Linear cost shows as a flat ratio across the three sizes.
"""

from __future__ import annotations

import time
import uuid

import psycopg
from loom.batch.v1 import batch_pb2 as pb

from bench.harness import BenchContext, Figure, benchmark, median
from libs.scratch_db import plain_url
from tests.support import auth, serve, stub_for

SUPPLIER = "00000000-0000-4000-8000-00000000b0b0"

LOAD = """
INSERT INTO batch.batches (id, category, supplier_id, status, target_quantity, capacity, current_quantity,
                           style_limit, style_count, order_count, window_open_time, window_close_time, unit_price)
SELECT gen_random_uuid(), 'bench_orchestrate', %(supplier)s, 'filling', 100, 200, 1 + (g * 37) %% 100,
       10, 1, 1, now() - interval '10 days', now() + ((g %% 10) - 3) * interval '1 day', 5
FROM generate_series(1, %(n)s) AS g;
INSERT INTO batch.orders (id, buyer_id, category, quantity, style, status, batch_id, supplier_id, currency,
                          supplier_unit_price, margin_percent, unit_price, subtotal, margin_amount, total)
SELECT gen_random_uuid(), 'bench', category, current_quantity, '{"style_count": 1, "colors": [], "sizes": [], "notes": ""}',
       'placed', id, supplier_id, 'USD', 5, 15, 5.75, current_quantity * 5, current_quantity * 0.75,
       current_quantity * 5.75
FROM batch.batches;
INSERT INTO batch.contributions (id, batch_id, order_id, quantity, style_count, amount)
SELECT gen_random_uuid(), batch_id, id, quantity, 1, subtotal FROM batch.orders;
INSERT INTO batch.filling_batches (id) SELECT id FROM batch.batches;
"""


def _reset(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE batch.refunds, batch.supplier_orders, batch.contributions, batch.orders, batch.filling_batches, "
            "batch.batches, batch.outbox, batch.idempotency_keys"
        )
        conn.execute(
            """
            INSERT INTO batch.suppliers (id, name, categories, moq, capacity, price_tiers, lead_time_days, rating,
                                         active, max_styles_per_batch)
            VALUES (%s, 'Bench', ARRAY['bench_orchestrate'], 100, 200, '[{"min_quantity": 1, "unit_price": "5"}]',
                    7, 4, true, 10)
            ON CONFLICT (id) DO NOTHING
            """,
            (SUPPLIER,),
        )
        with conn.transaction():
            for statement in LOAD.split(";")[:-1]:
                conn.execute(statement, {"supplier": SUPPLIER, "n": n})
        conn.execute("VACUUM ANALYZE batch.batches, batch.orders, batch.contributions, batch.filling_batches")


def _raw_update_seconds(url: str) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        conn.execute("UPDATE batch.batches SET update_time = now() WHERE status = 'filling'")
        conn.commit()
        return time.perf_counter() - started


@benchmark("batch.orchestrate", figures=("batch.orchestrate.10k", "batch.orchestrate.100k", "batch.orchestrate.1m"))
async def orchestrate(ctx: BenchContext) -> list[Figure]:
    url = plain_url(ctx.database_url)
    sizes = (
        ("10k", ctx.size("BENCH_ORCHESTRATE_10K", full=10_000, quick=1_000)),
        ("100k", ctx.size("BENCH_ORCHESTRATE_100K", full=100_000, quick=5_000)),
        ("1m", ctx.size("BENCH_ORCHESTRATE_1M", full=1_000_000, quick=20_000)),
    )
    figures = []
    async with serve("batch", ctx.database_url, outbox_dispatch=False, client_deadline_seconds=600) as running, stub_for(
        "batch", running.target
    ) as stub:
        for label, n in sizes:
            # A 1M run loads for minutes: fewer runs there, still a median.
            runs = ctx.runs if n < 1_000_000 else min(ctx.runs, 3)
            seconds, baselines = [], []
            for _ in range(runs):
                _reset(url, n)
                baselines.append(_raw_update_seconds(url))
                _reset(url, n)
                started = time.perf_counter()
                reply = await stub.Orchestrate(
                    pb.OrchestrateRequest(request_id=uuid.uuid4().hex), metadata=auth("admin"), timeout=600
                )
                seconds.append(time.perf_counter() - started)
                assert reply.batches_examined == n
            value, baseline = median(seconds), median(baselines)
            figures.append(
                Figure(f"batch.orchestrate.{label}", value, "s", value / baseline, "one raw UPDATE of every filling batch")
            )
    return figures
