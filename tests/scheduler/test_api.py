"""The scheduler's API against a real PostgreSQL and real gRPC peers (in-process server)."""

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from loom.scheduler.v1 import scheduler_pb2 as pb

from libs.scratch_db import plain_url
from tests.scheduler.helpers import (
    ADMIN,
    FAST,
    all_runs,
    eventually,
    invalid,
    params,
    run_now,
    scheduler,
    status_name,
    trigger_name,
)
from tests.support import auth, free_port

pytestmark = pytest.mark.timeout(90)


# --- jobs -------------------------------------------------------------------------------


async def test_list_jobs_shows_every_job_with_its_schedule_and_next_run(stub):
    jobs = {job.job_name: job for job in (await stub.ListJobs(pb.ListJobsRequest(), metadata=ADMIN)).jobs}
    assert set(jobs) == {
        "orchestrate-batches", "aggregate-popularity", "capture-price-snapshot", "purge-job-runs",
        "purge-batch-data", "purge-rules-data", "purge-tracking-data",
    }
    assert jobs["orchestrate-batches"].schedule.interval_seconds == 300
    assert jobs["aggregate-popularity"].schedule.cron == "0 2 * * *"
    assert jobs["capture-price-snapshot"].schedule.cron == "0 3 * * 0"
    assert jobs["orchestrate-batches"].target == "loom.batch.v1.BatchService/Orchestrate"
    assert all(job.HasField("next_run_time") and not job.paused for job in jobs.values())
    assert jobs["orchestrate-batches"].max_attempts == FAST["scheduler_max_attempts"]


async def test_get_job_of_an_unknown_name_is_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetJob(pb.GetJobRequest(job_name="make-coffee"), metadata=ADMIN)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_only_admins_and_services_may_call(stub):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListJobs(pb.ListJobsRequest(), metadata=auth("buyer"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListJobs(pb.ListJobsRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await stub.ListJobs(pb.ListJobsRequest(), metadata=auth("service", "service:rules"))


async def test_update_schedule_replaces_it_and_a_bad_one_changes_nothing(stub):
    update = pb.UpdateScheduleRequest(
        request_id="s1", job_name="aggregate-popularity",
        schedule=pb.Schedule(cron="15 1 * * *", time_zone="Europe/Berlin", jitter_seconds=30),
    )
    job = (await stub.UpdateSchedule(update, metadata=ADMIN)).job
    assert (job.schedule.cron, job.schedule.time_zone, job.schedule.jitter_seconds) == ("15 1 * * *", "Europe/Berlin", 30)

    violations = await invalid(stub.UpdateSchedule(pb.UpdateScheduleRequest(
        request_id="s2", job_name="aggregate-popularity", schedule=pb.Schedule(cron="0 25 * * *")), metadata=ADMIN))
    assert "schedule.cron" in violations
    violations = await invalid(stub.UpdateSchedule(pb.UpdateScheduleRequest(
        request_id="s3", job_name="aggregate-popularity", schedule=pb.Schedule(interval_seconds=60, cron="* * * * *")),
        metadata=ADMIN))
    assert "schedule" in violations
    job = (await stub.GetJob(pb.GetJobRequest(job_name="aggregate-popularity"), metadata=ADMIN)).job
    assert job.schedule.cron == "15 1 * * *"


async def test_a_replayed_update_returns_the_first_answer(stub):
    first = pb.UpdateScheduleRequest(request_id="same", job_name="orchestrate-batches",
                                     schedule=pb.Schedule(interval_seconds=600))
    await stub.UpdateSchedule(first, metadata=ADMIN)
    await stub.UpdateSchedule(pb.UpdateScheduleRequest(request_id="other", job_name="orchestrate-batches",
                                                       schedule=pb.Schedule(interval_seconds=900)), metadata=ADMIN)
    replay = (await stub.UpdateSchedule(first, metadata=ADMIN)).job
    current = (await stub.GetJob(pb.GetJobRequest(job_name="orchestrate-batches"), metadata=ADMIN)).job
    assert replay.schedule.interval_seconds == 600
    assert current.schedule.interval_seconds == 900


# --- running ----------------------------------------------------------------------------


async def test_run_now_calls_the_target_and_records_its_counts(stub, behaviour):
    run = await run_now(stub, "orchestrate-batches")
    assert status_name(run) == "succeeded" and trigger_name(run) == "manual" and run.attempt == 1
    assert run.result["batches_examined"] == 7 and run.result["orders_refunded"] == 3
    assert run.finish_time.ToDatetime() >= run.start_time.ToDatetime() and run.duration_seconds >= 0
    assert behaviour.request_ids("Orchestrate") == [run.target_request_id]


async def test_large_counts_keep_their_value(stub):
    run = await run_now(stub, "aggregate-popularity")
    assert run.result["interactions_scanned"] == 5_000_000_000


async def test_run_now_passes_params_to_the_target(stub):
    run = await run_now(stub, "purge-batch-data", retention_days=45)
    assert run.result["outbox_rows_deleted"] == 45
    assert run.params["retention_days"] == 45


async def test_params_the_target_cannot_take_are_refused_and_nothing_runs(stub, behaviour):
    assert "params.colour" in await invalid(run_now(stub, "orchestrate-batches", colour="red"))
    smuggled = pb.RunJobNowRequest(request_id="r", job_name="orchestrate-batches", params=params(request_id="x"))
    assert "params.request_id" in await invalid(stub.RunJobNow(smuggled, metadata=ADMIN))
    assert "params.retention_days" in await invalid(run_now(stub, "purge-job-runs", retention_days=-1))
    assert "request_id" in await invalid(stub.RunJobNow(pb.RunJobNowRequest(job_name="orchestrate-batches"),
                                                        metadata=ADMIN))
    assert behaviour.calls == [] and await all_runs(stub) == []


async def test_a_replayed_run_now_starts_nothing_new(stub, behaviour):
    first = await run_now(stub, "orchestrate-batches", request_id="trigger-workflow-1")
    again = await run_now(stub, "orchestrate-batches", request_id="trigger-workflow-1")
    assert again.run_id == first.run_id and status_name(again) == "succeeded"
    assert len(behaviour.calls) == 1 and len(await all_runs(stub)) == 1


async def test_run_now_without_wait_answers_at_once_and_the_run_finishes(stub, behaviour):
    behaviour.release = asyncio.Event()
    run = await run_now(stub, "capture-price-snapshot", wait=False)
    assert status_name(run) == "running"
    behaviour.release.set()

    async def finished():
        current = (await stub.GetJobRun(pb.GetJobRunRequest(run_id=run.run_id), metadata=ADMIN)).run
        return current if status_name(current) == "succeeded" else None

    assert (await eventually(finished)).result["prices_recorded"] == 12


async def test_a_second_run_while_one_is_running_is_skipped(stub, behaviour):
    behaviour.release = asyncio.Event()
    first = await run_now(stub, "orchestrate-batches", wait=False)
    second = await run_now(stub, "orchestrate-batches")
    assert status_name(second) == "skipped" and first.run_id in second.error
    behaviour.release.set()
    assert len(behaviour.calls) == 1


async def test_a_recovering_target_succeeds_on_a_retry_with_the_same_request_id(stub, behaviour):
    behaviour.failures = [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED]
    first = await run_now(stub, "orchestrate-batches")
    assert status_name(first) == "failed" and first.HasField("next_attempt_time")

    async def settled():
        runs = await all_runs(stub, "orchestrate-batches")
        return runs if runs[-1].attempt == 3 and status_name(runs[-1]) == "succeeded" else None

    runs = await eventually(settled)
    assert [(r.attempt, trigger_name(r), status_name(r)) for r in runs] == [
        (1, "manual", "failed"), (2, "retry", "failed"), (3, "retry", "succeeded")
    ]
    assert {r.firing_id for r in runs} == {first.run_id}
    assert set(behaviour.request_ids("Orchestrate")) == {first.target_request_id}


async def test_a_failing_target_retries_with_growing_delays_then_is_dead_lettered(stub, behaviour):
    behaviour.always_fail = grpc.StatusCode.RESOURCE_EXHAUSTED
    await run_now(stub, "orchestrate-batches")

    async def dead():
        runs = await all_runs(stub, "orchestrate-batches")
        return runs if status_name(runs[-1]) == "dead_lettered" else None

    runs = await eventually(dead)
    assert [status_name(r) for r in runs] == ["failed", "failed", "dead_lettered"]
    assert "RESOURCE_EXHAUSTED" in runs[-1].error and not runs[-1].HasField("next_attempt_time")
    planned = [r.next_attempt_time.ToDatetime() - r.finish_time.ToDatetime() for r in runs[:2]]
    waited = [b.start_time.ToDatetime() - a.finish_time.ToDatetime() for a, b in zip(runs, runs[1:], strict=False)]
    assert planned[1] > planned[0]
    assert all(w >= p for w, p in zip(waited, planned, strict=True))


async def test_a_target_service_that_is_not_running_is_a_clear_failure_never_a_success(scheduler_db, peer):
    async with scheduler(scheduler_db, peer, scheduler_max_attempts=1,
                         tracking_target=f"127.0.0.1:{free_port()}") as stub:
        run = await run_now(stub, "aggregate-popularity")
    assert status_name(run) == "dead_lettered"
    assert run.error.startswith("UNAVAILABLE: the tracking service at 127.0.0.1:")
    assert "cannot be reached" in run.error


async def test_a_target_that_does_not_implement_the_rpc_is_dead_lettered_at_once(scheduler_db):
    bare = grpc.aio.server()  # a service skeleton: serves nothing of BatchService
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    try:
        async with scheduler(scheduler_db, f"127.0.0.1:{port}") as stub:
            run = await run_now(stub, "orchestrate-batches")
            assert len(await all_runs(stub)) == 1
    finally:
        await bare.stop(0)
    assert status_name(run) == "dead_lettered" and run.attempt == 1
    assert "does not serve loom.batch.v1.BatchService/Orchestrate yet" in run.error


async def test_purge_job_runs_deletes_only_old_finished_runs(stub, scheduler_db):
    old = await run_now(stub, "orchestrate-batches")
    recent = await run_now(stub, "orchestrate-batches")
    with psycopg.connect(plain_url(scheduler_db), autocommit=True) as conn:
        conn.execute("UPDATE scheduler.job_runs SET start_time = now() - interval '40 days' WHERE id = %s",
                     (old.run_id,))
    purge = await run_now(stub, "purge-job-runs")
    assert status_name(purge) == "succeeded" and purge.result["runs_deleted"] == 1
    assert {r.run_id for r in await all_runs(stub, "orchestrate-batches")} == {recent.run_id}


# --- the schedule -----------------------------------------------------------------------


async def test_pause_stops_firing_resume_restarts_it_and_run_now_works_while_paused(scheduler_db, peer, behaviour):
    async with scheduler(scheduler_db, peer, scheduler_job_schedules={"orchestrate-batches": "@every 1s"}) as stub:
        async def scheduled():
            return [r for r in await all_runs(stub, "orchestrate-batches") if trigger_name(r) == "schedule"]

        await eventually(scheduled)
        paused = await stub.PauseJob(pb.PauseJobRequest(request_id="p", job_name="orchestrate-batches"),
                                     metadata=ADMIN)
        assert paused.job.paused and not paused.job.HasField("next_run_time")
        fired_before = len(await scheduled())
        await asyncio.sleep(2.5)
        assert len(await scheduled()) == fired_before

        manual = await run_now(stub, "orchestrate-batches")
        assert status_name(manual) == "succeeded"

        await stub.ResumeJob(pb.ResumeJobRequest(request_id="r", job_name="orchestrate-batches"), metadata=ADMIN)
        await eventually(lambda: _more_than(scheduled, fired_before))


async def _more_than(probe, count):
    return len(await probe()) > count


async def test_each_scheduled_firing_is_one_run_with_its_scheduled_time(scheduler_db, peer, behaviour):
    async with scheduler(scheduler_db, peer, scheduler_job_schedules={"orchestrate-batches": "@every 1s"}) as stub:
        runs = await eventually(lambda: _at_least(stub, 3))
    times = [r.scheduled_time.ToDatetime() for r in runs]
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)] == [1.0] * (len(times) - 1)
    assert len(set(behaviour.request_ids("Orchestrate"))) == len(behaviour.calls)


async def _at_least(stub, count):
    runs = [r for r in await all_runs(stub, "orchestrate-batches") if status_name(r) == "succeeded"]
    return runs if len(runs) >= count else None


async def test_restart_keeps_schedules_pauses_and_edited_schedules(scheduler_db, peer):
    async with scheduler(scheduler_db, peer) as stub:
        await stub.UpdateSchedule(pb.UpdateScheduleRequest(
            request_id="u", job_name="aggregate-popularity", schedule=pb.Schedule(cron="45 4 * * *")), metadata=ADMIN)
        await stub.PauseJob(pb.PauseJobRequest(request_id="p", job_name="capture-price-snapshot"), metadata=ADMIN)
        await eventually(lambda: _applied(scheduler_db))
    # The configured default differs from the edited schedule: the edit wins.
    async with scheduler(scheduler_db, peer, scheduler_job_schedules={"aggregate-popularity": "0 2 * * *"}) as stub:
        jobs = {job.job_name: job for job in (await stub.ListJobs(pb.ListJobsRequest(), metadata=ADMIN)).jobs}
        assert jobs["aggregate-popularity"].schedule.cron == "45 4 * * *"
        assert jobs["aggregate-popularity"].next_run_time.ToDatetime().strftime("%H:%M") == "04:45"
        assert jobs["capture-price-snapshot"].paused
        assert not jobs["capture-price-snapshot"].HasField("next_run_time")
    with psycopg.connect(plain_url(scheduler_db)) as conn:
        stored = dict(conn.execute("SELECT id, next_run_time FROM scheduler.apscheduler_jobs").fetchall())
    assert stored["capture-price-snapshot"] is None  # paused in APScheduler's own store too


async def _applied(database_url):
    with psycopg.connect(plain_url(database_url)) as conn:
        return conn.execute("SELECT bool_and(version = applied_version) FROM scheduler.jobs").fetchone()[0]


async def test_a_changed_configured_schedule_applies_when_not_edited_over_the_api(scheduler_db, peer):
    async with scheduler(scheduler_db, peer):
        pass
    async with scheduler(scheduler_db, peer, scheduler_job_schedules={"purge-batch-data": "0 5 * * *"}) as stub:
        job = (await stub.GetJob(pb.GetJobRequest(job_name="purge-batch-data"), metadata=ADMIN)).job
    assert job.schedule.cron == "0 5 * * *"


# --- the log ----------------------------------------------------------------------------


async def test_list_job_runs_filters_and_pages_newest_first(stub, behaviour):
    for _ in range(5):
        await run_now(stub, "orchestrate-batches")
    behaviour.always_fail = grpc.StatusCode.INVALID_ARGUMENT
    failed = await run_now(stub, "capture-price-snapshot")

    first = await stub.ListJobRuns(pb.ListJobRunsRequest(job_name="orchestrate-batches", page_size=3), metadata=ADMIN)
    second = await stub.ListJobRuns(pb.ListJobRunsRequest(
        job_name="orchestrate-batches", page_size=3, page_token=first.next_page_token), metadata=ADMIN)
    starts = [r.start_time.ToDatetime() for r in [*first.runs, *second.runs]]
    assert len(starts) == 5 and starts == sorted(starts, reverse=True) and not second.next_page_token

    dead = await stub.ListJobRuns(pb.ListJobRunsRequest(status=pb.JOB_RUN_STATUS_DEAD_LETTERED), metadata=ADMIN)
    assert [r.run_id for r in dead.runs] == [failed.run_id]
    later = await stub.ListJobRuns(pb.ListJobRunsRequest(start_time=failed.start_time), metadata=ADMIN)
    assert [r.run_id for r in later.runs] == [failed.run_id]

    violations = await invalid(stub.ListJobRuns(pb.ListJobRunsRequest(
        job_name="capture-price-snapshot", page_token=first.next_page_token), metadata=ADMIN))
    assert "page_token" in violations


async def test_get_job_run_of_a_bad_or_unknown_id(stub):
    assert "run_id" in await invalid(stub.GetJobRun(pb.GetJobRunRequest(run_id="nope"), metadata=ADMIN))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetJobRun(pb.GetJobRunRequest(run_id=str(uuid.uuid4())), metadata=ADMIN)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_job_runs_streams_a_run_as_it_starts_and_ends(stub, behaviour):
    stream = stub.WatchJobRuns(pb.WatchJobRunsRequest(job_name="orchestrate-batches"), metadata=ADMIN)
    await stream.wait_for_connection()
    seen: list[pb.JobRun] = []

    async def read():
        async for message in stream:
            seen.append(message.run)
            if status_name(message.run) == "succeeded":
                return

    reader = asyncio.create_task(read())
    await run_now(stub, "capture-price-snapshot")  # another job: filtered out
    behaviour.release = asyncio.Event()
    run = await run_now(stub, "orchestrate-batches", wait=False)
    behaviour.release.set()
    await asyncio.wait_for(reader, 10)
    stream.cancel()
    assert [(r.run_id, status_name(r)) for r in seen] == [(run.run_id, "running"), (run.run_id, "succeeded")]


async def test_job_summary_gives_success_rate_and_p95_duration(stub, scheduler_db):
    for _ in range(19):
        await run_now(stub, "orchestrate-batches")
    with psycopg.connect(plain_url(scheduler_db), autocommit=True) as conn:
        conn.execute("""
            UPDATE scheduler.job_runs r SET duration_seconds = n.i
            FROM (SELECT id, row_number() OVER (ORDER BY start_time) AS i FROM scheduler.job_runs) n
            WHERE r.id = n.id""")
        conn.execute("""
            INSERT INTO scheduler.job_runs (id, job_name, firing_id, trigger, attempt, status, start_time,
                finish_time, duration_seconds, error, runner, runner_key, target_request_id)
            VALUES (gen_random_uuid(), 'orchestrate-batches', gen_random_uuid(), 'schedule', 1, 'dead_lettered',
                now(), now(), 20, 'UNAVAILABLE: down', 'r', 1, 'x')""")
    summary = await stub.GetJobSummary(pb.GetJobSummaryRequest(job_name="orchestrate-batches"), metadata=ADMIN)
    assert (summary.runs, summary.succeeded, summary.failed, summary.dead_lettered) == (20, 19, 1, 1)
    assert summary.success_rate == pytest.approx(0.95) and summary.target_success_rate == 0.95
    assert summary.average_duration_seconds == pytest.approx(10.5)
    assert summary.p95_duration_seconds == pytest.approx(19.05)
    assert summary.last_error == "UNAVAILABLE: down"
    assert "window_hours" in await invalid(stub.GetJobSummary(
        pb.GetJobSummaryRequest(job_name="orchestrate-batches", window_hours=-1), metadata=ADMIN))


async def test_a_new_default_time_zone_moves_cron_jobs_that_name_none(scheduler_db, peer):
    async with scheduler(scheduler_db, peer):
        await eventually(lambda: _applied(scheduler_db))
    async with scheduler(scheduler_db, peer, scheduler_time_zone="Asia/Tokyo"):
        async def moved():
            with psycopg.connect(plain_url(scheduler_db)) as conn:
                (stamp,) = conn.execute("SELECT next_run_time FROM scheduler.apscheduler_jobs "
                                        "WHERE id = 'aggregate-popularity'").fetchone()
            return datetime.fromtimestamp(stamp, UTC).hour == 17  # 02:00 in Tokyo

        await eventually(moved)
