"""Catch-up windows at their edge: downtime longer and shorter than a job's window,
with and without coalescing, and a pause, for an every-second job."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from loom.scheduler.v1 import scheduler_pb2 as pb

from tests.scheduler.helpers import ADMIN, all_runs, eventually, scheduler, status_name

pytestmark = pytest.mark.timeout(120)

JOB = "pulse"


async def define(stub, window_seconds: int, coalesce: bool = False) -> None:
    job = pb.Job(job_name=JOB, target="loom.batch.v1.BatchService/Orchestrate",
                 schedule=pb.Schedule(interval_seconds=1),
                 catch_up=pb.CatchUpPolicy(window_seconds=window_seconds, coalesce=coalesce))
    await stub.CreateJob(pb.CreateJobRequest(request_id="define", job=job), metadata=ADMIN)


async def scheduled(stub) -> list[pb.JobRun]:
    runs = [r for r in await all_runs(stub, JOB) if r.HasField("scheduled_time")]
    return sorted(runs, key=lambda r: r.scheduled_time.ToDatetime())


async def down_for(scheduler_db, peer, seconds: float, window: int, coalesce: bool = False) -> list[pb.JobRun]:
    """The firings due while no replica led: the job stopped for `seconds`."""
    async with scheduler(scheduler_db, peer) as stub:
        await define(stub, window, coalesce)
        await eventually(lambda: _at_least(stub, 2))
    stopped = datetime.now(UTC).replace(tzinfo=None)
    await asyncio.sleep(seconds)
    async with scheduler(scheduler_db, peer) as stub:
        before = len(await scheduled(stub))

        async def caught_up():
            runs = await scheduled(stub)
            return runs if len(runs) >= before + seconds + 1 else None

        runs = await eventually(caught_up, timeout=30)
        # Every period has exactly one row: run, missed or coalesced, never silence.
        times = [r.scheduled_time.ToDatetime() for r in runs]
        assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(seconds=1)] * (len(times) - 1)
        # Due while none led: scheduled before the new leader's first decision.
        after_stop = [r for r in runs if r.scheduled_time.ToDatetime() > stopped]
        took_over = min(r.start_time.ToDatetime() for r in after_stop)
        return [r for r in after_stop if r.scheduled_time.ToDatetime() <= took_over]


async def _at_least(stub, count):
    runs = await scheduled(stub)
    return len(runs) >= count and all(status_name(r) != "running" for r in runs)


async def test_downtime_longer_than_the_window_runs_the_recent_firings_and_records_older_ones_missed(
    scheduler_db, peer
):
    late = await down_for(scheduler_db, peer, 5, window=2)
    missed = [r for r in late if status_name(r) == "skipped"]
    ran = [r for r in late if status_name(r) == "succeeded"]
    assert missed and all("outside the 2s catch-up window" in r.decision for r in missed)
    assert ran, "firings within the window run late"
    assert max(r.scheduled_time.ToDatetime() for r in missed) < min(r.scheduled_time.ToDatetime() for r in ran)


async def test_downtime_shorter_than_the_window_runs_every_missed_firing_once(scheduler_db, peer, behaviour):
    late = await down_for(scheduler_db, peer, 3, window=60)
    assert len(late) >= 3
    assert {status_name(r) for r in late} == {"succeeded"}, [(status_name(r), r.decision) for r in late]
    assert len(behaviour.calls) == len(set(behaviour.calls))


async def test_coalesce_runs_the_missed_firings_once_in_all(scheduler_db, peer):
    late = await down_for(scheduler_db, peer, 3, window=60, coalesce=True)
    coalesced = [r for r in late if "coalesced" in r.decision]
    assert len(coalesced) >= 2 and all(status_name(r) == "skipped" for r in coalesced)
    (into,) = {r.decision.removeprefix("coalesced into the firing at ") for r in coalesced}
    assert [status_name(r) for r in late if r not in coalesced] == ["succeeded"]
    assert late[-1].scheduled_time.ToDatetime().isoformat() == into.removesuffix("+00:00")


async def test_firings_missed_while_paused_are_caught_up_on_resume(stub):
    await define(stub, window_seconds=60)
    await eventually(lambda: _at_least(stub, 1))
    await stub.PauseJob(pb.PauseJobRequest(request_id="p", job_name=JOB), metadata=ADMIN)
    await asyncio.sleep(0.5)
    paused_at = len(await scheduled(stub))
    await asyncio.sleep(3)
    await stub.ResumeJob(pb.ResumeJobRequest(request_id="r", job_name=JOB), metadata=ADMIN)

    async def caught_up():
        runs = await scheduled(stub)
        return runs if len(runs) >= paused_at + 3 else None

    runs = await eventually(caught_up)
    while_paused = [r for r in runs[paused_at:] if r.start_time.ToDatetime() - r.scheduled_time.ToDatetime()
                    > timedelta(seconds=0.9)]
    assert len(while_paused) >= 2 and {status_name(r) for r in while_paused} <= {"succeeded", "running"}
