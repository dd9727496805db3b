"""Scheduler replicas as real OS processes: one leader fires, a standby takes over
after kill -9, a run cut short by kill -9 reads interrupted after a restart, and a
backfill and a job defined at run time survive the leader's kill -9 with each slot
and each period run once."""

import asyncio
import json
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest
from loom.scheduler.v1 import scheduler_pb2 as pb

from tests.scheduler.helpers import ADMIN, all_runs, eventually, status_name, trigger_name
from tests.scheduler.peers import Behaviour, peers
from tests.scheduler.test_backfills import stamp
from tests.support import ServiceProcess, free_port, process_env, stub_for, wait_serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


class Replicas:
    """Scheduler processes on one database, all stopped at the end of the test."""

    def __init__(self, database_url: str, peer: str, interval: str, stack: ExitStack) -> None:
        self._database_url, self._peer, self._interval, self._stack = database_url, peer, interval, stack

    async def start(self) -> tuple[ServiceProcess, str]:
        port = free_port()
        env = process_env(
            "scheduler", self._database_url, port,
            LOOM_BATCH_TARGET=self._peer,
            LOOM_TRACKING_TARGET=self._peer,
            LOOM_SCHEDULER_LEADER_POLL_SECONDS="0.2",
            LOOM_SCHEDULER_JOB_SCHEDULES=json.dumps({"orchestrate-batches": self._interval}),
        )
        process = ServiceProcess("scheduler", env).start()
        self._stack.callback(lambda: process.process.poll() is None and process.terminate())
        target = f"127.0.0.1:{port}"
        await wait_serving(target, timeout=60)
        return process, target


def pid_of(run: pb.JobRun) -> int:
    return int(run.runner.split("/")[1])


def scheduled(runs: list[pb.JobRun]) -> list[pb.JobRun]:
    return sorted((r for r in runs if trigger_name(r) == "schedule"), key=lambda r: r.scheduled_time.ToDatetime())


def assert_one_run_per_period(runs: list[pb.JobRun], period: float) -> None:
    times = [r.scheduled_time.ToDatetime() for r in runs]
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)] == [period] * (len(times) - 1)


async def test_two_replicas_fire_each_period_once_and_the_standby_takes_over_after_kill_9(scheduler_db):
    behaviour = Behaviour()
    with ExitStack() as stack:
        async with peers(behaviour) as peer:
            replicas = Replicas(scheduler_db, peer, "@every 1s", stack)
            (first, first_target), (second, second_target) = await asyncio.gather(replicas.start(), replicas.start())
            processes = {first.process.pid: first, second.process.pid: second}
            targets = {first.process.pid: first_target, second.process.pid: second_target}
            async with stub_for("scheduler", second_target) as stub:

                async def periods(count: int):
                    runs = scheduled(await all_runs(stub, "orchestrate-batches"))
                    return runs if len(runs) >= count else None

                before = await eventually(lambda: periods(4), timeout=60)
                leaders = {pid_of(r) for r in before}
                assert len(leaders) == 1, "exactly one replica fires"
                leader = leaders.pop()
                processes[leader].kill()
                survivor = (set(processes) - {leader}).pop()

            async with stub_for("scheduler", targets[survivor]) as stub:

                async def taken_over():
                    runs = scheduled(await all_runs(stub, "orchestrate-batches"))
                    after = [r for r in runs if pid_of(r) == survivor]
                    return runs if len(after) >= 3 else None

                runs = await eventually(taken_over, timeout=60)
    last_by_leader = max(i for i, r in enumerate(runs) if pid_of(r) == leader)
    assert all(pid_of(r) == survivor for r in runs[last_by_leader + 1:])
    # Every period ran once, across the kill: no gap, no double.
    assert_one_run_per_period(runs, 1.0)
    # The survivor's newest run may still be going when the runs are read; every other one has ended.
    assert {status_name(r) for r in runs[:-1]} <= {"succeeded", "interrupted", "skipped"}
    assert status_name(runs[-1]) in {"succeeded", "running"}
    assert len(behaviour.calls) == len(set(behaviour.calls))


async def test_kill_9_during_a_long_run_reads_interrupted_after_restart_and_the_job_fires_again(scheduler_db):
    behaviour = Behaviour()
    behaviour.release = asyncio.Event()  # every call hangs until the end of the test
    with ExitStack() as stack:
        async with peers(behaviour) as peer:
            replicas = Replicas(scheduler_db, peer, "@every 2s", stack)
            process, target = await replicas.start()
            await asyncio.wait_for(behaviour.entered.wait(), 60)
            async with stub_for("scheduler", target) as stub:
                (cut_short,) = await all_runs(stub, "orchestrate-batches")
            assert status_name(cut_short) == "running"
            process.kill()

            _, target = await replicas.start()
            async with stub_for("scheduler", target) as stub:
                run = (await stub.GetJobRun(pb.GetJobRunRequest(run_id=cut_short.run_id), metadata=ADMIN)).run
                assert status_name(run) == "interrupted"
                assert "stopped during the run" in run.error and run.HasField("finish_time")

                async def fired_again():
                    runs = scheduled(await all_runs(stub, "orchestrate-batches"))
                    return [r for r in runs if r.scheduled_time.ToDatetime() > cut_short.scheduled_time.ToDatetime()]

                later = await eventually(fired_again, timeout=30)
                assert later[0].runner != cut_short.runner
            behaviour.release.set()


async def test_a_backfill_and_a_runtime_job_survive_kill_9_of_the_leader_running_each_slot_once(scheduler_db):
    behaviour = Behaviour()
    behaviour.delay = 0.4  # each slot's call takes a while, so the kill lands mid-backfill
    with ExitStack() as stack:
        async with peers(behaviour) as peer:
            replicas = Replicas(scheduler_db, peer, "@every 1h", stack)
            (first, first_target), (second, second_target) = await asyncio.gather(replicas.start(), replicas.start())
            processes = {first.process.pid: first, second.process.pid: second}
            targets = {first.process.pid: first_target, second.process.pid: second_target}
            async with stub_for("scheduler", first_target) as stub:
                pulse = pb.Job(job_name="pulse", target="loom.batch.v1.BatchService/Orchestrate",
                               schedule=pb.Schedule(interval_seconds=1))
                await stub.CreateJob(pb.CreateJobRequest(request_id="pulse", job=pulse), metadata=ADMIN)
                created = (await stub.CreateBackfill(pb.CreateBackfillRequest(
                    request_id=str(uuid.uuid4()), job_name="aggregate-popularity",
                    start_time=stamp(datetime(2026, 11, 1, tzinfo=UTC)),
                    end_time=stamp(datetime(2026, 11, 15, tzinfo=UTC)), max_concurrency=2), metadata=ADMIN)).backfill

                async def some_slots_done():
                    runs = await all_runs(stub, backfill_id=created.backfill_id, status=pb.JOB_RUN_STATUS_SUCCEEDED)
                    return runs if len(runs) >= 4 else None

                (leader,) = {pid_of(r) for r in await eventually(some_slots_done, timeout=60)}
                processes[leader].kill()
                finished_before_kill = set(behaviour.completed)
            survivor = (set(processes) - {leader}).pop()
            async with stub_for("scheduler", targets[survivor]) as stub:

                async def backfill_done():
                    current = (await stub.GetBackfill(pb.GetBackfillRequest(backfill_id=created.backfill_id),
                                                      metadata=ADMIN)).backfill
                    return current if current.state != pb.BACKFILL_STATE_RUNNING else None

                done = await eventually(backfill_done, timeout=90)
                slots = await all_runs(stub, backfill_id=created.backfill_id)

                async def pulses_after_kill():
                    runs = scheduled(await all_runs(stub, "pulse"))
                    return runs if len([r for r in runs if pid_of(r) == survivor]) >= 3 else None

                pulses = await eventually(pulses_after_kill, timeout=60)
    assert (done.state, done.succeeded, done.slots) == (pb.BACKFILL_STATE_SUCCEEDED, 14, 14)
    succeeded = Counter(r.scheduled_time.ToDatetime() for r in slots if status_name(r) == "succeeded")
    assert len(succeeded) == 14 and set(succeeded.values()) == {1}, "each slot succeeded once"
    # A slot that had finished before the kill was never called again; one cut short was resumed.
    calls = Counter(request_id for method, request_id in behaviour.calls if method == "AggregatePopularity")
    assert all(calls[request_id] == 1 for request_id in finished_before_kill if request_id in calls)
    interrupted = [r for r in slots if status_name(r) == "interrupted"]
    assert interrupted, "the kill landed with slots in flight"
    resumed = {r.target_request_id for r in slots if r.attempt == 2 and status_name(r) == "succeeded"}
    assert {r.target_request_id for r in interrupted} <= resumed
    assert_one_run_per_period(pulses, 1.0)
