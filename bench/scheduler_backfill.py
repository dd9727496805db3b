"""What a backfill costs per slot: 1,000 slots of a job whose target does nothing.

The job is defined at run time (every second, calling batch.Orchestrate on a
minimal real gRPC server that answers at once); the figure is the seconds from
CreateBackfill until the backfill has ended, every slot recorded in the job-run
log (queued, started, finished). The baseline is 1,000 direct calls of the same
target, one after another, in the same run. Each run backfills a fresh range, so
no slot is skipped as already done.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from loom.batch.v1 import batch_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb

from bench.harness import BenchContext, Figure, benchmark, median
from libs.clients import STUBS, open_channel
from tests.scheduler.peers import Behaviour, peers
from tests.support import auth, serve, stub_for

CONCURRENCY = 8
POLL_SECONDS = 0.1


@benchmark("scheduler.backfill.1k", figures=("scheduler.backfill.1k",))
async def backfill_1k(ctx: BenchContext) -> list[Figure]:
    slots = ctx.size("BENCH_SCHEDULER_BACKFILL_SLOTS", full=1000, quick=200)
    admin = auth("admin")
    async with peers(Behaviour()) as peer:
        direct_channel = open_channel(peer)
        direct = STUBS["batch"](direct_channel)
        async with serve("scheduler", ctx.database_url, batch_target=peer, scheduler_leader_poll_seconds=0.05) as s:
            async with stub_for("scheduler", s.target) as stub:
                job = pb.Job(job_name=f"noop-{uuid.uuid4().hex[:8]}", target="loom.batch.v1.BatchService/Orchestrate",
                             schedule=pb.Schedule(interval_seconds=1), paused=True)
                await stub.CreateJob(pb.CreateJobRequest(request_id=str(uuid.uuid4()), job=job), metadata=admin)
                end = datetime.now(UTC).replace(microsecond=0)

                async def through_backfill(run: int) -> float:
                    start = end - timedelta(seconds=slots * (run + 1))
                    request = pb.CreateBackfillRequest(request_id=str(uuid.uuid4()), job_name=job.job_name,
                                                       max_concurrency=CONCURRENCY)
                    request.start_time.FromDatetime(start)
                    request.end_time.FromDatetime(start + timedelta(seconds=slots))
                    started = time.perf_counter()
                    created = (await stub.CreateBackfill(request, metadata=admin)).backfill
                    while True:
                        current = (await stub.GetBackfill(pb.GetBackfillRequest(backfill_id=created.backfill_id),
                                                          metadata=admin)).backfill
                        if current.state != pb.BACKFILL_STATE_RUNNING:
                            break
                        await asyncio.sleep(POLL_SECONDS)
                    elapsed = time.perf_counter() - started
                    assert current.state == pb.BACKFILL_STATE_SUCCEEDED and current.succeeded == slots, current
                    return elapsed

                async def directly() -> float:
                    started = time.perf_counter()
                    for _ in range(slots):
                        await direct.Orchestrate(batch_pb2.OrchestrateRequest(request_id=str(uuid.uuid4())))
                    return time.perf_counter() - started

                backfilled, baseline = [], []
                for run in range(ctx.runs):
                    baseline.append(await directly())
                    backfilled.append(await through_backfill(run))
        await direct_channel.close()
    value, base = median(backfilled), median(baseline)
    return [Figure("scheduler.backfill.1k", value, "s", value / base, f"{slots} direct target calls")]
