"""What the audit trail costs an audited call (libs/audit.py).

One batch service in-process; its auditor is switched off and on between runs (off: no
engine attached, the interceptor skips auditing), so both sides share the server, the
database and the moment. 32 concurrent clients on loopback:

- `foundation.interceptor.audited.write`: `CreateSupplier` by an admin, an accepted
  change: one more INSERT in the change's own transaction.
- `foundation.interceptor.audited.refused`: `ResolveReview` by a buyer, refused by the
  access check: the record is queued and group-inserted after the answer.
"""

from __future__ import annotations

import uuid

import grpc
from loom.batch.v1 import batch_pb2 as pb

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from tests.support import auth, serve, stub_for

CLIENTS = 32
FIGURES = ("foundation.interceptor.audited.write", "foundation.interceptor.audited.refused")


@benchmark("foundation.interceptor.audited", figures=FIGURES)
async def audited_overhead(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_AUDITED_CALLS", full=5_000, quick=500)
    admin, buyer = auth("admin"), auth("buyer")
    async with serve("batch", ctx.database_url, outbox_dispatch=False) as running, stub_for("batch", running.target) as stub:
        auditor = running.context.auditor
        engine = auditor.engine
        supplier = pb.Supplier(name="Bench Mill", categories=["bench"], moq=10, capacity=100, active=True,
                               max_styles_per_batch=5, lead_time_days=3,
                               price_tiers=[pb.PriceTier(min_quantity=1, unit_price="1.00")])

        async def write(_: int) -> None:
            await stub.CreateSupplier(pb.CreateSupplierRequest(request_id=uuid.uuid4().hex, supplier=supplier),
                                      metadata=admin)

        async def refused(_: int) -> None:
            try:
                await stub.ResolveReview(pb.ResolveReviewRequest(request_id=uuid.uuid4().hex,
                                                                 batch_id=str(uuid.uuid4())), metadata=buyer)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED

        rates: dict[str, list[float]] = {}
        for _ in range(ctx.runs):
            for name, call in (("write", write), ("refused", refused)):
                for audited in (False, True):
                    auditor.engine = engine if audited else None
                    rate, _ = await closed_loop(call, clients=CLIENTS, total=total)
                    rates.setdefault(f"{name}.{audited}", []).append(rate)
            await auditor.drain()
        auditor.engine = engine
    figures = []
    for name in ("write", "refused"):
        value, baseline = median(rates[f"{name}.True"]), median(rates[f"{name}.False"])
        figures.append(Figure(f"foundation.interceptor.audited.{name}", value, "calls/s", value / baseline,
                              "same server, auditing off"))
    return figures
