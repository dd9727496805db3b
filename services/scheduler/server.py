"""loom.scheduler.v1.SchedulerService: proto <-> the job table, the run log and the runner."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb
from loom.scheduler.v1 import scheduler_pb2_grpc
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import db, idempotency, pagination
from libs.errors import InvalidArgument, NotFound
from services.scheduler import store
from services.scheduler.domain import JOBS, RunStatus, Schedule, TriggerKind, build_trigger, validate_schedule
from services.scheduler.runner import Runner
from services.scheduler.settings import SchedulerSettings
from services.scheduler.targets import validate_params
from services.scheduler.watch import RunWatch

TARGET_SUCCESS_RATE = 0.95
DEFAULT_SUMMARY_HOURS = 24 * 7
MAX_SUMMARY_HOURS = 24 * 366


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _struct(value: dict | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def run_message(row: Row) -> pb.JobRun:
    return pb.JobRun(
        run_id=str(row.id),
        job_name=row.job_name,
        trigger=pb.TriggerKind.Value(f"TRIGGER_KIND_{row.trigger.upper()}"),
        attempt=row.attempt,
        status=pb.JobRunStatus.Value(f"JOB_RUN_STATUS_{row.status.upper()}"),
        start_time=_timestamp(row.start_time),
        finish_time=_timestamp(row.finish_time),
        duration_seconds=row.duration_seconds or 0.0,
        result=_struct(row.result),
        error=row.error,
        params=_struct(row.params),
        runner=row.runner,
        scheduled_time=_timestamp(row.scheduled_time),
        firing_id=str(row.firing_id),
        next_attempt_time=_timestamp(row.next_attempt_time),
        target_request_id=row.target_request_id,
    )


def _job_name(name: str, field: str = "job_name") -> str:
    if not name:
        raise InvalidArgument.field(field, "required")
    if name not in JOBS:
        raise NotFound("job", name)
    return name


def _run_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.field("run_id", "not a run id (a UUID)") from None


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, engine: AsyncEngine, runner: Runner, watch: RunWatch, settings: SchedulerSettings) -> None:
        self._engine, self._runner, self._watch, self._settings = engine, runner, watch, settings

    # --- jobs --------------------------------------------------------------------------

    def _job_message(self, row: Row, next_runs: dict[str, datetime | None], last: Row | None) -> pb.Job:
        schedule = store.schedule_of(row)
        definition = JOBS[row.name]
        return pb.Job(
            job_name=row.name,
            description=definition.description,
            target=definition.target,
            schedule=pb.Schedule(
                cron=schedule.cron,
                interval_seconds=schedule.interval_seconds,
                time_zone=schedule.time_zone,
                jitter_seconds=schedule.jitter_seconds,
            ),
            paused=row.paused,
            next_run_time=_timestamp(self._next_run_time(row, schedule, next_runs)),
            last_run=run_message(last) if last is not None else None,
            max_attempts=self._settings.scheduler_max_attempts,
        )

    def _next_run_time(self, row: Row, schedule: Schedule, next_runs: dict[str, datetime | None]) -> datetime | None:
        if row.paused:
            return None
        if row.version == row.applied_version and next_runs.get(row.name) is not None:
            return next_runs[row.name]
        # The leader has not applied the latest change yet: what the schedule gives from now.
        now = datetime.now(UTC)
        return build_trigger(schedule, self._settings.scheduler_time_zone).get_next_fire_time(None, now)

    async def _jobs(self, conn: AsyncConnection, names: list[str] | None = None) -> list[pb.Job]:
        rows = await store.job_rows(conn, names)
        next_runs = await store.next_run_times(conn)
        last = await store.last_runs(conn)
        return [self._job_message(row, next_runs, last.get(row.name)) for row in rows if row.name in JOBS]

    async def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:
        async with self._engine.connect() as conn:
            return pb.ListJobsResponse(jobs=await self._jobs(conn))

    async def GetJob(self, request: pb.GetJobRequest, context) -> pb.GetJobResponse:
        name = _job_name(request.job_name)
        async with self._engine.connect() as conn:
            return pb.GetJobResponse(job=(await self._jobs(conn, [name]))[0])

    async def _change(self, method: str, request, response_type, change) -> object:
        name = _job_name(request.job_name)

        async def work(conn: AsyncConnection):
            await change(conn, name)
            return response_type(job=(await self._jobs(conn, [name]))[0])

        return await idempotency.run_idempotent(
            self._engine, store.idempotency_keys, method, request, response_type, work,
            attempts=self._settings.db_retry_attempts,
        )

    async def PauseJob(self, request: pb.PauseJobRequest, context) -> pb.PauseJobResponse:
        return await self._change(
            "PauseJob", request, pb.PauseJobResponse, lambda conn, name: store.change_job(conn, name, paused=True)
        )

    async def ResumeJob(self, request: pb.ResumeJobRequest, context) -> pb.ResumeJobResponse:
        return await self._change(
            "ResumeJob", request, pb.ResumeJobResponse, lambda conn, name: store.change_job(conn, name, paused=False)
        )

    async def UpdateSchedule(self, request: pb.UpdateScheduleRequest, context) -> pb.UpdateScheduleResponse:
        if not request.HasField("schedule"):
            raise InvalidArgument.field("schedule", "required")
        schedule = Schedule(
            cron=" ".join(request.schedule.cron.split()),
            interval_seconds=request.schedule.interval_seconds,
            time_zone=request.schedule.time_zone,
            jitter_seconds=request.schedule.jitter_seconds,
        )
        validate_schedule(schedule)
        return await self._change(
            "UpdateSchedule", request, pb.UpdateScheduleResponse,
            lambda conn, name: store.set_schedule(conn, name, schedule),
        )

    # --- runs --------------------------------------------------------------------------

    async def RunJobNow(self, request: pb.RunJobNowRequest, context) -> pb.RunJobNowResponse:
        name = _job_name(request.job_name)
        idempotency.validate_request_id(request.request_id)
        params = json_format.MessageToDict(request.params) if request.HasField("params") else {}
        validate_params(JOBS[name], params)
        started: list[Row] = []

        async def work(conn: AsyncConnection) -> pb.RunJobNowResponse:
            started.clear()
            stored = await idempotency.claim(conn, store.idempotency_keys, "RunJobNow", request.request_id, request)
            if stored is not None:
                return pb.RunJobNowResponse.FromString(stored)
            run = await self._runner.open_firing(conn, name, TriggerKind.MANUAL, params=params)
            started.append(run)
            response = pb.RunJobNowResponse(run=run_message(run))
            await idempotency.remember(conn, store.idempotency_keys, "RunJobNow", request.request_id, response)
            return response

        response = await db.run_in_transaction(self._engine, work, attempts=self._settings.db_retry_attempts)
        if started:
            self._runner.launch(started[0])
        run_id = uuid.UUID(response.run.run_id)
        if request.wait:
            return pb.RunJobNowResponse(run=run_message(await self._runner.wait(run_id)))
        if not started:  # a replay: the run as it stands now
            async with self._engine.connect() as conn:
                return pb.RunJobNowResponse(run=run_message(await store.get_run(conn, run_id)))
        return response

    async def ListJobRuns(self, request: pb.ListJobRunsRequest, context) -> pb.ListJobRunsResponse:
        limit = pagination.page_size(request.page_size)
        status = None
        if request.status != pb.JOB_RUN_STATUS_UNSPECIFIED:
            status = RunStatus(pb.JobRunStatus.Name(request.status).removeprefix("JOB_RUN_STATUS_").lower())
        start_after = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        start_before = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
        scope = f"runs:{request.job_name}:{request.status}:{start_after}:{start_before}"
        cursor = pagination.decode_token(request.page_token, scope=scope)
        async with self._engine.connect() as conn:
            rows = await store.list_runs(
                conn,
                job_name=request.job_name,
                status=status,
                start_after=start_after,
                start_before=start_before,
                cursor=(datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1])) if cursor else None,
                limit=limit + 1,
            )
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = pagination.encode_token([rows[-1].start_time.isoformat(), str(rows[-1].id)], scope=scope)
        return pb.ListJobRunsResponse(runs=[run_message(row) for row in rows], next_page_token=token)

    async def GetJobRun(self, request: pb.GetJobRunRequest, context) -> pb.GetJobRunResponse:
        run_id = _run_id(request.run_id)
        async with self._engine.connect() as conn:
            row = await store.get_run(conn, run_id)
        if row is None:
            raise NotFound("job run", request.run_id)
        return pb.GetJobRunResponse(run=run_message(row))

    async def WatchJobRuns(self, request: pb.WatchJobRunsRequest, context):
        if request.job_name:
            _job_name(request.job_name)
        async with self._watch.subscribe(request.job_name) as runs:
            # Headers go out once listening, so a client that has them misses nothing after.
            await context.send_initial_metadata(())
            async for row in runs:
                yield pb.WatchJobRunsResponse(run=run_message(row))

    async def GetJobSummary(self, request: pb.GetJobSummaryRequest, context) -> pb.GetJobSummaryResponse:
        name = _job_name(request.job_name)
        if not 0 <= request.window_hours <= MAX_SUMMARY_HOURS:
            raise InvalidArgument.field("window_hours", f"between 0 (a week) and {MAX_SUMMARY_HOURS}")
        since = datetime.now(UTC) - timedelta(hours=request.window_hours or DEFAULT_SUMMARY_HOURS)
        async with self._engine.connect() as conn:
            summary = await store.summarize(conn, name, since)
        finished = summary.succeeded + summary.failed
        return pb.GetJobSummaryResponse(
            job_name=name,
            runs=summary.runs,
            succeeded=summary.succeeded,
            failed=summary.failed,
            success_rate=summary.succeeded / finished if finished else 0.0,
            target_success_rate=TARGET_SUCCESS_RATE,
            average_duration_seconds=summary.average_duration,
            p95_duration_seconds=summary.p95_duration,
            last_error=summary.last_error,
            last_error_time=_timestamp(summary.last_error_time),
            dead_lettered=summary.dead_lettered,
            interrupted=summary.interrupted,
            skipped=summary.skipped,
        )
