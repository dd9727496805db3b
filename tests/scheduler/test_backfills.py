"""Backfills in process: every slot of a past range once, its logical time passed
to the target, within the concurrency, idempotent per (job, slot), cancellable."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb

from tests.scheduler.helpers import ADMIN, all_runs, eventually, invalid, refused, status_name, trigger_name

pytestmark = pytest.mark.timeout(90)

JOB = "aggregate-popularity"  # daily at 02:00 in the default zone (UTC)
NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC))


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


async def backfill(stub, start=NOVEMBER[0], end=NOVEMBER[1], concurrency=2, job=JOB, **fields) -> pb.Backfill:
    request = pb.CreateBackfillRequest(request_id=str(uuid.uuid4()), job_name=job, start_time=stamp(start),
                                       end_time=stamp(end), max_concurrency=concurrency, **fields)
    return (await stub.CreateBackfill(request, metadata=ADMIN)).backfill


async def ended(stub, backfill_id: str) -> pb.Backfill:
    async def done():
        current = (await stub.GetBackfill(pb.GetBackfillRequest(backfill_id=backfill_id), metadata=ADMIN)).backfill
        return current if current.state != pb.BACKFILL_STATE_RUNNING else None

    return await eventually(done, timeout=60)


async def test_a_backfill_runs_each_slot_once_with_its_logical_time_two_at_a_time(stub, behaviour):
    behaviour.delay = 0.1
    created = await backfill(stub)
    assert (created.slots, created.pending, created.state) == (14, 14, pb.BACKFILL_STATE_RUNNING)
    done = await ended(stub, created.backfill_id)
    assert (done.state, done.succeeded, done.pending) == (pb.BACKFILL_STATE_SUCCEEDED, 14, 0)

    runs = await all_runs(stub, JOB, trigger=pb.TRIGGER_KIND_BACKFILL)
    assert len(runs) == 14 and {r.backfill_id for r in runs} == {created.backfill_id}
    slots = sorted(r.scheduled_time.ToDatetime(UTC) for r in runs)
    assert slots == [datetime(2026, 11, day, 2, tzinfo=UTC) for day in range(1, 15)]
    # The target saw each slot once, as its logical time, never more than two at once.
    assert sorted(behaviour.logical_times.values()) == [s.isoformat() for s in slots]
    assert len(behaviour.calls) == 14 and behaviour.most_in_flight == 2


async def test_a_repeated_backfill_does_not_rerun_a_slot_that_succeeded(stub, behaviour):
    first = await ended(stub, (await backfill(stub, end=datetime(2026, 11, 4, tzinfo=UTC))).backfill_id)
    again = await ended(stub, (await backfill(stub)).backfill_id)
    assert (first.succeeded, again.skipped, again.succeeded) == (3, 3, 11)
    skipped = await all_runs(stub, JOB, backfill_id=again.backfill_id, status=pb.JOB_RUN_STATUS_SKIPPED)
    assert all("slot already succeeded" in r.decision for r in skipped)
    assert len(behaviour.calls) == 14


async def test_cancelling_a_backfill_stops_its_running_slots_and_drops_the_rest(stub, behaviour):
    behaviour.release = asyncio.Event()
    created = await backfill(stub)
    await asyncio.wait_for(behaviour.entered.wait(), 30)
    cancelled = (await stub.CancelBackfill(pb.CancelBackfillRequest(request_id="c", backfill_id=created.backfill_id),
                                           metadata=ADMIN)).backfill
    assert cancelled.state == pb.BACKFILL_STATE_CANCELLED

    async def stopped():
        runs = await all_runs(stub, JOB, backfill_id=created.backfill_id)
        return runs if all(status_name(r) == "cancelled" for r in runs) else None

    assert len(await eventually(stopped)) == 14
    assert behaviour.completed == []
    await refused(stub.CancelBackfill(pb.CancelBackfillRequest(request_id="c2", backfill_id=created.backfill_id),
                                      metadata=ADMIN), grpc.StatusCode.FAILED_PRECONDITION)


async def test_a_backfill_waits_for_the_jobs_own_run_under_a_buffer_policy(stub, behaviour):
    behaviour.release = asyncio.Event()
    await stub.RunJobNow(pb.RunJobNowRequest(request_id="m", job_name=JOB), metadata=ADMIN)
    created = await backfill(stub, end=datetime(2026, 11, 3, tzinfo=UTC),
                             overlap_policy=pb.OVERLAP_POLICY_BUFFER_ALL)
    await asyncio.sleep(1)
    waiting = await all_runs(stub, JOB, backfill_id=created.backfill_id)
    assert {status_name(r) for r in waiting} == {"queued"}
    behaviour.release.set()
    assert (await ended(stub, created.backfill_id)).succeeded == 2


async def test_a_backfill_skips_its_slots_while_the_job_runs_under_skip(stub, behaviour):
    behaviour.release = asyncio.Event()
    manual = await stub.RunJobNow(pb.RunJobNowRequest(request_id="m", job_name=JOB), metadata=ADMIN)
    created = await backfill(stub, end=datetime(2026, 11, 3, tzinfo=UTC), concurrency=2)
    done = await ended(stub, created.backfill_id)
    behaviour.release.set()
    assert (done.state, done.skipped) == (pb.BACKFILL_STATE_SUCCEEDED, 2)
    runs = await all_runs(stub, JOB, backfill_id=created.backfill_id)
    assert all(manual.run.run_id in r.decision for r in runs)


async def test_bad_backfills_are_refused_and_nothing_is_recorded(stub):
    future = datetime.now(UTC) + timedelta(days=1)
    assert "end_time" in await invalid(backfill(stub, end=future))
    assert "max_concurrency" in await invalid(backfill(stub, concurrency=100))
    assert "end_time" in await invalid(backfill(stub, start=NOVEMBER[1], end=NOVEMBER[0]))
    await refused(backfill(stub, job="make-coffee"), grpc.StatusCode.NOT_FOUND)
    assert not (await stub.ListBackfills(pb.ListBackfillsRequest(), metadata=ADMIN)).backfills
    assert await all_runs(stub) == []


async def test_list_job_runs_filters_by_trigger_and_time_range(stub):
    await stub.RunJobNow(pb.RunJobNowRequest(request_id="m", job_name=JOB, wait=True), metadata=ADMIN)
    done = await ended(stub, (await backfill(stub, end=datetime(2026, 11, 3, tzinfo=UTC))).backfill_id)
    assert [trigger_name(r) for r in await all_runs(stub, trigger=pb.TRIGGER_KIND_MANUAL)] == ["manual"]
    assert len(await all_runs(stub, trigger=pb.TRIGGER_KIND_BACKFILL)) == 2
    assert await all_runs(stub, trigger=pb.TRIGGER_KIND_RETRY) == []
    assert await all_runs(stub, end_time=stamp(datetime(2026, 1, 1, tzinfo=UTC))) == []
    listed = (await stub.ListBackfills(pb.ListBackfillsRequest(job_name=JOB), metadata=ADMIN)).backfills
    assert [b.backfill_id for b in listed] == [done.backfill_id]
