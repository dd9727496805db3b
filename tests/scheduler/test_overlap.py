"""Overlap policies at their edge: one long run spanning three further firings of
an every-second job, under each policy, against a real PostgreSQL and gRPC peer."""

import asyncio

import pytest
from loom.scheduler.v1 import scheduler_pb2 as pb

from tests.scheduler.helpers import ADMIN, all_runs, eventually, status_name

pytestmark = pytest.mark.timeout(120)

JOB = "pulse"


async def four_firings_then_release(stub, behaviour, policy: str) -> tuple[list[pb.JobRun], list[pb.JobRun]]:
    """The log of the first four firings while the first run is held, and once all settled."""
    behaviour.release = asyncio.Event()
    job = pb.Job(job_name=JOB, target="loom.batch.v1.BatchService/Orchestrate",
                 schedule=pb.Schedule(interval_seconds=1),
                 overlap_policy=pb.OverlapPolicy.Value(f"OVERLAP_POLICY_{policy}"))
    await stub.CreateJob(pb.CreateJobRequest(request_id=f"create-{policy}", job=job), metadata=ADMIN)
    await asyncio.wait_for(behaviour.entered.wait(), 30)

    async def four():
        runs = [r for r in await all_runs(stub, JOB) if r.HasField("scheduled_time")]
        return runs if len(runs) >= 4 else None

    await eventually(four, timeout=30, every=0.05)
    # No fifth firing: the first four are the whole story.
    await stub.PauseJob(pb.PauseJobRequest(request_id="stop", job_name=JOB), metadata=ADMIN)
    await asyncio.sleep(0.5)  # cancellations asked for reach their runner on its next tick
    held = sorted((r for r in await all_runs(stub, JOB) if r.HasField("scheduled_time")),
                  key=lambda r: r.scheduled_time.ToDatetime())[:4]
    behaviour.release.set()

    async def settled():
        runs = await all_runs(stub, JOB)
        return runs if all(status_name(r) not in ("running", "queued") for r in runs) else None

    await eventually(settled, timeout=30)
    final = {r.run_id: r for r in await all_runs(stub, JOB)}
    return held, [final[r.run_id] for r in held]


@pytest.fixture
def every_second(stub):
    """A job defined at run time that fires every second, with the policy under test."""
    return stub


def statuses(runs: list[pb.JobRun]) -> list[str]:
    return [status_name(r) for r in runs]


async def test_skip_records_the_firings_during_a_long_run_as_skipped(every_second, behaviour):
    held, final = await four_firings_then_release(every_second, behaviour, "SKIP")
    assert statuses(final) == ["succeeded", "skipped", "skipped", "skipped"]
    assert all(held[0].run_id in r.decision and "SKIP" in r.decision for r in final[1:])
    assert len(behaviour.calls) == 1


async def test_buffer_one_keeps_one_firing_waiting_and_skips_the_rest(every_second, behaviour):
    held, final = await four_firings_then_release(every_second, behaviour, "BUFFER_ONE")
    assert statuses(held) == ["running", "queued", "skipped", "skipped"]
    assert statuses(final) == ["succeeded", "succeeded", "skipped", "skipped"]
    assert "already waits" in final[2].decision
    # The buffered firing started only after the long run had ended.
    assert final[1].start_time.ToDatetime() >= final[0].finish_time.ToDatetime()


async def test_buffer_all_runs_every_firing_one_after_another(every_second, behaviour):
    held, final = await four_firings_then_release(every_second, behaviour, "BUFFER_ALL")
    assert statuses(held) == ["running", "queued", "queued", "queued"]
    assert statuses(final) == ["succeeded"] * 4
    for earlier, later in zip(final, final[1:], strict=False):
        assert later.start_time.ToDatetime() >= earlier.finish_time.ToDatetime()
    assert len(behaviour.completed) == 4


async def test_cancel_other_stops_each_run_for_the_next_firing(every_second, behaviour):
    held, final = await four_firings_then_release(every_second, behaviour, "CANCEL_OTHER")
    assert statuses(final) == ["cancelled", "cancelled", "cancelled", "succeeded"]
    assert all("CANCEL_OTHER" in r.decision for r in final[:3])
    # Each cancelled run had started and was cut short; only the last one completed.
    assert len(behaviour.calls) == 4 and len(behaviour.completed) == 1


async def test_allow_all_runs_every_firing_alongside(every_second, behaviour):
    held, final = await four_firings_then_release(every_second, behaviour, "ALLOW_ALL")
    assert statuses(held) == ["running"] * 4
    assert statuses(final) == ["succeeded"] * 4
    assert behaviour.most_in_flight == 4
