"""What a manual run costs end to end: RunJobNow(wait) through the scheduler.

Each run writes its job-run row, calls the target (a minimal real gRPC server
implementing batch.Orchestrate) and records the outcome before answering; the
baseline is the same Orchestrate call made directly, in the same run.
"""

from __future__ import annotations

import uuid

from loom.batch.v1 import batch_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb

from bench.harness import BenchContext, Figure, benchmark, closed_loop, median
from libs.clients import STUBS, open_channel
from tests.scheduler.peers import Behaviour, peers
from tests.support import auth, serve, stub_for


@benchmark("scheduler.run_now", figures=("scheduler.run_now",))
async def run_now(ctx: BenchContext) -> list[Figure]:
    total = ctx.size("BENCH_SCHEDULER_RUNS", full=300, quick=40)
    admin = auth("admin")
    async with peers(Behaviour()) as peer:
        direct_channel = open_channel(peer)
        direct = STUBS["batch"](direct_channel)
        async with serve("scheduler", ctx.database_url, batch_target=peer) as scheduler:
            async with stub_for("scheduler", scheduler.target) as stub:

                async def through_scheduler(_: int) -> None:
                    request = pb.RunJobNowRequest(request_id=str(uuid.uuid4()), job_name="orchestrate-batches", wait=True)
                    run = (await stub.RunJobNow(request, metadata=admin)).run
                    assert run.status == pb.JOB_RUN_STATUS_SUCCEEDED, run.error

                async def directly(_: int) -> None:
                    await direct.Orchestrate(batch_pb2.OrchestrateRequest(request_id=str(uuid.uuid4())))

                scheduled, baseline = [], []
                # One client: runs of one job never overlap (a second would be skipped).
                for _ in range(ctx.runs):
                    baseline.append((await closed_loop(directly, clients=1, total=total))[0])
                    scheduled.append((await closed_loop(through_scheduler, clients=1, total=total))[0])
        await direct_channel.close()
    value, base = median(scheduled), median(baseline)
    return [Figure("scheduler.run_now", value, "runs/s", value / base, "direct target RPC")]
