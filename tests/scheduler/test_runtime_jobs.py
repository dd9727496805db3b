"""Jobs defined at run time over the API, and blackout calendars: definitions are
checked against the protos' allow-list and request messages before anything is stored."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb

from tests.scheduler.helpers import (
    ADMIN,
    all_runs,
    eventually,
    invalid,
    params,
    refused,
    status_name,
    update_job,
)
from tests.support import auth

pytestmark = pytest.mark.timeout(90)

PURGE = "loom.batch.v1.BatchService/PurgeOldData"


def job(name="nightly-purge", target=PURGE, **fields) -> pb.Job:
    fields.setdefault("schedule", pb.Schedule(cron="0 1 * * *", time_zone="Europe/Berlin"))
    return pb.Job(job_name=name, target=target, **fields)


async def create(stub, definition: pb.Job, metadata=ADMIN) -> pb.Job:
    request = pb.CreateJobRequest(request_id=str(uuid.uuid4()), job=definition)
    return (await stub.CreateJob(request, metadata=metadata)).job


async def job_names(stub) -> set[str]:
    return {j.job_name for j in (await stub.ListJobs(pb.ListJobsRequest(), metadata=ADMIN)).jobs}


def at(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now))
    return stamp


async def test_a_payload_the_target_cannot_take_is_refused_with_a_violation_per_field(stub):
    before = await job_names(stub)
    violations = await invalid(create(stub, job(payload=params(retention_days="soon", colour="red", request_id="x"))))
    assert set(violations) == {"job.payload.retention_days", "job.payload.colour", "job.payload.request_id"}
    assert "int32" in violations["job.payload.retention_days"]
    assert "loom.batch.v1.PurgeOldDataRequest" in violations["job.payload.colour"]
    assert await job_names(stub) == before


async def test_only_rpcs_on_the_protos_allow_list_can_be_targets(stub):
    violations = await invalid(create(stub, job(target="loom.batch.v1.BatchService/PlaceOrder")))
    assert "job.target" in violations and PURGE in violations["job.target"]
    methods = (await stub.ListSchedulableMethods(pb.ListSchedulableMethodsRequest(), metadata=ADMIN)).methods
    assert {m.target: m.request_type for m in methods}[PURGE] == "loom.batch.v1.PurgeOldDataRequest"
    assert "loom.batch.v1.BatchService/PlaceOrder" not in {m.target for m in methods}


async def test_every_bad_part_of_a_definition_is_named_at_once(stub):
    bad = job(name="Nightly Purge", schedule=pb.Schedule(cron="0 25 * * *", time_zone="Mars/Olympus"),
              max_attempts=50, blackout_calendars=["no-such-calendar"])
    assert set(await invalid(create(stub, bad))) == {
        "job.job_name", "job.schedule.cron", "job.schedule.time_zone", "job.max_attempts",
        "job.blackout_calendars[0]",
    }


async def test_a_runtime_job_fires_its_payload_at_its_target(stub, behaviour):
    created = await create(stub, job(schedule=pb.Schedule(interval_seconds=1), payload=params(retention_days=9),
                                     max_attempts=2, deadline_seconds=5))
    assert not created.builtin and created.max_attempts == 2 and created.HasField("next_run_time")

    async def fired():
        runs = [r for r in await all_runs(stub, "nightly-purge") if status_name(r) == "succeeded"]
        return runs or None

    (run, *_) = await eventually(fired)
    assert run.result["outbox_rows_deleted"] == 9  # the peer echoes the payload's retention_days
    assert behaviour.logical_times[run.target_request_id] == run.scheduled_time.ToDatetime(UTC).isoformat()


async def test_a_one_shot_job_fires_once(stub):
    await create(stub, job(name="once", schedule=pb.Schedule(run_at=at(1))))
    runs = await eventually(lambda: _succeeded(stub, "once"))
    await asyncio.sleep(1.5)
    assert len(await all_runs(stub, "once")) == len(runs) == 1
    assert not (await stub.GetJob(pb.GetJobRequest(job_name="once"), metadata=ADMIN)).job.HasField("next_run_time")


async def _succeeded(stub, name):
    return [r for r in await all_runs(stub, name) if status_name(r) == "succeeded"]


async def test_a_name_is_taken_once(stub):
    await create(stub, job())
    await refused(create(stub, job()), grpc.StatusCode.ALREADY_EXISTS)


async def test_runtime_jobs_update_and_delete_but_built_in_ones_only_reschedule(stub):
    await create(stub, job())
    changed = await update_job(stub, "nightly-purge", "payload", "overlap_policy",
                               payload=params(retention_days=3), overlap_policy=pb.OVERLAP_POLICY_BUFFER_ALL)
    assert changed.payload["retention_days"] == 3 and changed.overlap_policy == pb.OVERLAP_POLICY_BUFFER_ALL
    assert "job.payload.colour" in await invalid(update_job(stub, "nightly-purge", "payload", payload=params(colour=1)))

    builtin = await update_job(stub, "orchestrate-batches", "catch_up", catch_up=pb.CatchUpPolicy(window_seconds=60))
    assert builtin.builtin and builtin.catch_up.window_seconds == 60
    await refused(update_job(stub, "orchestrate-batches", "target", target=PURGE), grpc.StatusCode.FAILED_PRECONDITION)
    await refused(stub.DeleteJob(pb.DeleteJobRequest(request_id="d1", job_name="orchestrate-batches"), metadata=ADMIN),
                  grpc.StatusCode.FAILED_PRECONDITION)

    await stub.DeleteJob(pb.DeleteJobRequest(request_id="d2", job_name="nightly-purge"), metadata=ADMIN)
    assert "nightly-purge" not in await job_names(stub)
    await refused(stub.GetJob(pb.GetJobRequest(job_name="nightly-purge"), metadata=ADMIN), grpc.StatusCode.NOT_FOUND)


async def test_only_admins_define_jobs(stub):
    await refused(create(stub, job(), metadata=auth("service", "service:rules")), grpc.StatusCode.PERMISSION_DENIED)


# --- blackout calendars -----------------------------------------------------------------


def calendar(name: str, zone: str, *ranges: tuple[datetime, datetime]) -> pb.BlackoutCalendar:
    return pb.BlackoutCalendar(name=name, time_zone=zone, ranges=[
        pb.BlackoutRange(start=a.isoformat(timespec="seconds"), end=b.isoformat(timespec="seconds"))
        for a, b in ranges
    ])


async def test_a_job_does_not_fire_during_its_blackout_and_the_calendar_is_named(stub, behaviour):
    tokyo_now = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)
    freeze = calendar("freeze", "Asia/Tokyo", (tokyo_now - timedelta(hours=1), tokyo_now + timedelta(hours=1)))
    await stub.CreateBlackoutCalendar(pb.CreateBlackoutCalendarRequest(request_id="c", calendar=freeze),
                                      metadata=ADMIN)
    await create(stub, job(schedule=pb.Schedule(interval_seconds=1), blackout_calendars=["freeze"]))
    runs = await eventually(lambda: _at_least(stub, "nightly-purge", 2))
    assert {status_name(r) for r in runs} == {"skipped"}
    assert all(r.decision == "blackout calendar freeze" for r in runs)
    assert behaviour.calls == []
    manual = (await stub.RunJobNow(pb.RunJobNowRequest(request_id="m", job_name="nightly-purge", wait=True),
                                   metadata=ADMIN)).run
    assert status_name(manual) == "succeeded", "a blackout holds the schedule, not an operator"


async def _at_least(stub, name, count):
    runs = await all_runs(stub, name)
    return runs if len(runs) >= count else None


async def test_calendars_are_checked_kept_and_not_deleted_while_named(stub):
    assert set(await invalid(stub.CreateBlackoutCalendar(pb.CreateBlackoutCalendarRequest(
        request_id="bad", calendar=pb.BlackoutCalendar(name="x", time_zone="Nowhere", ranges=[
            pb.BlackoutRange(start="2026-12-27T00:00:00", end="2026-12-24T00:00:00")])), metadata=ADMIN))) == {
        "calendar.time_zone", "calendar.ranges[0]"}
    xmas = calendar("xmas", "Europe/Berlin", (datetime(2026, 12, 24), datetime(2026, 12, 27)))
    await stub.CreateBlackoutCalendar(pb.CreateBlackoutCalendarRequest(request_id="c1", calendar=xmas), metadata=ADMIN)
    await refused(stub.CreateBlackoutCalendar(pb.CreateBlackoutCalendarRequest(request_id="c2", calendar=xmas),
                                              metadata=ADMIN), grpc.StatusCode.ALREADY_EXISTS)
    await update_job(stub, "capture-price-snapshot", "blackout_calendars", blackout_calendars=["xmas"])
    await refused(stub.DeleteBlackoutCalendar(pb.DeleteBlackoutCalendarRequest(request_id="d1", name="xmas"),
                                              metadata=ADMIN), grpc.StatusCode.FAILED_PRECONDITION)
    stored = (await stub.GetBlackoutCalendar(pb.GetBlackoutCalendarRequest(name="xmas"), metadata=ADMIN)).calendar
    assert (stored.time_zone, stored.ranges[0].start) == ("Europe/Berlin", "2026-12-24T00:00:00")
    await update_job(stub, "capture-price-snapshot", "blackout_calendars")
    await stub.DeleteBlackoutCalendar(pb.DeleteBlackoutCalendarRequest(request_id="d2", name="xmas"), metadata=ADMIN)
    assert not (await stub.ListBlackoutCalendars(pb.ListBlackoutCalendarsRequest(), metadata=ADMIN)).calendars
