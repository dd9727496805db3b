"""loom.scheduler.v1.SchedulerService: translates messages, owns each call's
transaction and idempotency key, and hands the work to usecases.py."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from loom.scheduler.v1 import scheduler_pb2 as pb
from loom.scheduler.v1 import scheduler_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from libs import audit, db, idempotency, pagination
from libs.errors import InvalidArgument
from services.scheduler import usecases
from services.scheduler.api import messages as m
from services.scheduler.api.errors import mapping_domain_errors
from services.scheduler.domain.blackouts import NAME as CALENDAR_NAME
from services.scheduler.domain.blackouts import parse_calendar
from services.scheduler.domain.errors import InvalidInput, Missing, Violation
from services.scheduler.domain.jobs import NAME as JOB_NAME
from services.scheduler.runner import Runner
from services.scheduler.settings import SchedulerSettings
from services.scheduler.store import backfills as backfill_store
from services.scheduler.store import calendars as calendar_store
from services.scheduler.store import runs as run_store
from services.scheduler.store.records import RunRecord
from services.scheduler.store.tables import idempotency_keys
from services.scheduler.targets import schedulable_targets
from services.scheduler.watch import RunWatch

TARGET_SUCCESS_RATE = 0.95
DEFAULT_SUMMARY_HOURS = 24 * 7
MAX_SUMMARY_HOURS = 24 * 366

R = TypeVar("R", bound=Message)
Context: TypeAlias = grpc.aio.ServicerContext


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "required")
    return value


def _job_name(value: str, field: str = "job_name") -> str:
    """A job's name; one no job could have is NOT_FOUND without asking the database."""
    if not JOB_NAME.fullmatch(_required(value, field)):
        raise Missing("job", value)
    return value


def _calendar_name(value: str) -> str:
    if not CALENDAR_NAME.fullmatch(_required(value, "name")):
        raise Missing("blackout calendar", value)
    return value


def _job_filter(value: str) -> str:
    if value and not JOB_NAME.fullmatch(value):
        raise InvalidArgument.field("job_name", "not a job name")
    return value


def _run_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.field("run_id", "not a run id (a UUID)") from None


@mapping_domain_errors
class SchedulerServicer(audit.AuditTrail, scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, engine: AsyncEngine, runner: Runner, watch: RunWatch, settings: SchedulerSettings) -> None:
        self._engine, self._runner, self._watch, self._settings = engine, runner, watch, settings
        self._zone = settings.scheduler_time_zone

    async def _idempotent(self, method: str, request: Any, response_type: type[R],
                          work: Callable[[AsyncConnection], Awaitable[R]]) -> R:
        return await idempotency.run_idempotent(
            self._engine, idempotency_keys, method, request, response_type, work,
            attempts=self._settings.db_retry_attempts,
        )

    def _job(self, view: usecases.JobView) -> pb.Job:
        return m.job_message(
            view.job, view.next_run_time, view.last_run,
            default_max_attempts=self._settings.scheduler_max_attempts,
            default_window=self._settings.scheduler_catch_up_window_seconds,
        )

    async def _job_now(self, conn: AsyncConnection, name: str) -> pb.Job:
        return self._job(await usecases.job_view(conn, self._zone, name))

    # --- jobs --------------------------------------------------------------------------

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        async with self._engine.connect() as conn:
            return pb.ListJobsResponse(jobs=[self._job(view) for view in await usecases.job_views(conn, self._zone)])

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        name = _job_name(request.job_name)
        async with self._engine.connect() as conn:
            return pb.GetJobResponse(job=await self._job_now(conn, name))

    async def _change(self, method: str, request: Any, response_type: type[R], **values: Any) -> R:
        name = _job_name(request.job_name)

        async def work(conn: AsyncConnection) -> R:
            await usecases.change_job(conn, name, **values)
            return response_type(job=await self._job_now(conn, name))

        return await self._idempotent(method, request, response_type, work)

    async def PauseJob(self, request: pb.PauseJobRequest, context: Context) -> pb.PauseJobResponse:
        return await self._change("PauseJob", request, pb.PauseJobResponse, paused=True)

    async def ResumeJob(self, request: pb.ResumeJobRequest, context: Context) -> pb.ResumeJobResponse:
        return await self._change("ResumeJob", request, pb.ResumeJobResponse, paused=False)

    async def UpdateSchedule(self, request: pb.UpdateScheduleRequest, context: Context) -> pb.UpdateScheduleResponse:
        if not request.HasField("schedule"):
            raise InvalidArgument.field("schedule", "required")
        name = _job_name(request.job_name)
        changes = m.job_spec(pb.Job(job_name=name, schedule=request.schedule))

        async def work(conn: AsyncConnection) -> pb.UpdateScheduleResponse:
            await usecases.update_job(conn, name, changes, ["schedule"])
            return pb.UpdateScheduleResponse(job=await self._job_now(conn, name))

        try:
            return await self._idempotent("UpdateSchedule", request, pb.UpdateScheduleResponse, work)
        except InvalidInput as invalid:
            # This RPC names the schedule at the top level of its request.
            raise InvalidInput([Violation(v.field.removeprefix("job."), v.description)
                                for v in invalid.violations]) from None

    async def CreateJob(self, request: pb.CreateJobRequest, context: Context) -> pb.CreateJobResponse:
        idempotency.validate_request_id(request.request_id)
        spec = m.job_spec(request.job)

        async def work(conn: AsyncConnection) -> pb.CreateJobResponse:
            await usecases.create_job(conn, spec)
            return pb.CreateJobResponse(job=await self._job_now(conn, spec.name))

        return await self._idempotent("CreateJob", request, pb.CreateJobResponse, work)

    async def UpdateJob(self, request: pb.UpdateJobRequest, context: Context) -> pb.UpdateJobResponse:
        name = _job_name(request.job.job_name, "job.job_name")
        changes = m.job_spec(request.job)

        async def work(conn: AsyncConnection) -> pb.UpdateJobResponse:
            await usecases.update_job(conn, name, changes, list(request.update_mask.paths))
            return pb.UpdateJobResponse(job=await self._job_now(conn, name))

        return await self._idempotent("UpdateJob", request, pb.UpdateJobResponse, work)

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Context) -> pb.DeleteJobResponse:
        name = _job_name(request.job_name)

        async def work(conn: AsyncConnection) -> pb.DeleteJobResponse:
            await usecases.delete_job(conn, name)
            return pb.DeleteJobResponse()

        return await self._idempotent("DeleteJob", request, pb.DeleteJobResponse, work)

    async def ListSchedulableMethods(
        self, request: pb.ListSchedulableMethodsRequest, context: Context
    ) -> pb.ListSchedulableMethodsResponse:
        return pb.ListSchedulableMethodsResponse(methods=[
            pb.SchedulableMethod(target=t.name, request_type=t.request_type.DESCRIPTOR.full_name)
            for t in schedulable_targets()
        ])

    # --- runs --------------------------------------------------------------------------

    async def RunJobNow(self, request: pb.RunJobNowRequest, context: Context) -> pb.RunJobNowResponse:
        name = _job_name(request.job_name)
        idempotency.validate_request_id(request.request_id)
        params = m.plain(request.params) if request.HasField("params") else {}
        started: list[tuple] = []

        async def work(conn: AsyncConnection) -> pb.RunJobNowResponse:
            started.clear()
            stored = await idempotency.claim(conn, idempotency_keys, "RunJobNow", request.request_id, request)
            if stored is not None:
                return pb.RunJobNowResponse.FromString(stored)
            run, job = await usecases.run_now(conn, self._runner, name, params)
            started.append((run, job))
            response = pb.RunJobNowResponse(run=m.run_message(run))
            await idempotency.remember(conn, idempotency_keys, "RunJobNow", request.request_id, response)
            return response

        response = await db.run_in_transaction(self._engine, work, attempts=self._settings.db_retry_attempts)
        if started:
            self._runner.launch(*started[0])
        run_id = uuid.UUID(response.run.run_id)
        if request.wait:
            return pb.RunJobNowResponse(run=m.run_message(await self._runner.wait(run_id)))
        if not started:  # a replay: the run as it stands now
            return pb.RunJobNowResponse(run=m.run_message(await self._run(run_id)))
        return response

    async def _run(self, run_id: uuid.UUID) -> RunRecord:
        async with self._engine.connect() as conn:
            run = await run_store.get_run(conn, run_id)
        if run is None:
            raise Missing("job run", str(run_id))
        return run

    async def ListJobRuns(self, request: pb.ListJobRunsRequest, context: Context) -> pb.ListJobRunsResponse:
        limit = pagination.page_size(request.page_size)
        start_after, start_before = m.instant(request, "start_time"), m.instant(request, "end_time")
        backfill_id = usecases.parse_backfill_id(request.backfill_id) if request.backfill_id else None
        scope = (f"runs:{request.job_name}:{request.status}:{request.trigger}:{request.backfill_id}:"
                 f"{start_after}:{start_before}")
        cursor = pagination.decode_token(request.page_token, scope=scope)
        async with self._engine.connect() as conn:
            runs = await run_store.list_runs(
                conn,
                job_name=_job_filter(request.job_name),
                status=m.run_status(request.status),
                trigger=m.trigger_kind(request.trigger),
                backfill_id=backfill_id,
                start_after=start_after,
                start_before=start_before,
                cursor=(datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1])) if cursor else None,
                limit=limit + 1,
            )
        token = ""
        if len(runs) > limit:
            runs = runs[:limit]
            token = pagination.encode_token([runs[-1].start_time.isoformat(), str(runs[-1].id)], scope=scope)
        return pb.ListJobRunsResponse(runs=[m.run_message(run) for run in runs], next_page_token=token)

    async def GetJobRun(self, request: pb.GetJobRunRequest, context: Context) -> pb.GetJobRunResponse:
        return pb.GetJobRunResponse(run=m.run_message(await self._run(_run_id(request.run_id))))

    async def WatchJobRuns(self, request: pb.WatchJobRunsRequest, context: Context):
        if request.job_name:
            async with self._engine.connect() as conn:
                await usecases.job_view(conn, self._zone, _job_name(request.job_name))
        async with self._watch.subscribe(request.job_name) as runs:
            # Headers go out once listening, so a client that has them misses nothing after.
            await context.send_initial_metadata(())
            async for run in runs:
                yield pb.WatchJobRunsResponse(run=m.run_message(run))

    async def GetJobSummary(self, request: pb.GetJobSummaryRequest, context: Context) -> pb.GetJobSummaryResponse:
        name = _job_name(request.job_name)
        if not 0 <= request.window_hours <= MAX_SUMMARY_HOURS:
            raise InvalidArgument.field("window_hours", f"between 0 (a week) and {MAX_SUMMARY_HOURS}")
        since = datetime.now(UTC) - timedelta(hours=request.window_hours or DEFAULT_SUMMARY_HOURS)
        async with self._engine.connect() as conn:
            await usecases.job_view(conn, self._zone, name)
            summary = await run_store.summarize(conn, name, since)
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
            last_error_time=m.timestamp(summary.last_error_time),
            dead_lettered=summary.dead_lettered,
            interrupted=summary.interrupted,
            skipped=summary.skipped,
        )

    # --- backfills ---------------------------------------------------------------------

    async def CreateBackfill(self, request: pb.CreateBackfillRequest, context: Context) -> pb.CreateBackfillResponse:
        name = _job_name(request.job_name)
        idempotency.validate_request_id(request.request_id)

        async def work(conn: AsyncConnection) -> pb.CreateBackfillResponse:
            backfill = await usecases.create_backfill(
                conn, self._runner, self._zone, job_name=name, start=m.instant(request, "start_time"),
                end=m.instant(request, "end_time"), max_concurrency=request.max_concurrency,
                overlap_policy=m.overlap_policy(request.overlap_policy),
            )
            return pb.CreateBackfillResponse(backfill=m.backfill_message(backfill))

        return await self._idempotent("CreateBackfill", request, pb.CreateBackfillResponse, work)

    async def GetBackfill(self, request: pb.GetBackfillRequest, context: Context) -> pb.GetBackfillResponse:
        backfill_id = usecases.parse_backfill_id(request.backfill_id)
        async with self._engine.connect() as conn:
            return pb.GetBackfillResponse(backfill=m.backfill_message(await usecases.get_backfill(conn, backfill_id)))

    async def ListBackfills(self, request: pb.ListBackfillsRequest, context: Context) -> pb.ListBackfillsResponse:
        limit = pagination.page_size(request.page_size)
        scope = f"backfills:{request.job_name}"
        cursor = pagination.decode_token(request.page_token, scope=scope)
        async with self._engine.connect() as conn:
            found = await backfill_store.list_backfills(
                conn, job_name=_job_filter(request.job_name), limit=limit + 1,
                cursor=(datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1])) if cursor else None,
            )
        token = ""
        if len(found) > limit:
            found = found[:limit]
            token = pagination.encode_token([found[-1].create_time.isoformat(), str(found[-1].id)], scope=scope)
        return pb.ListBackfillsResponse(backfills=[m.backfill_message(b) for b in found], next_page_token=token)

    async def CancelBackfill(self, request: pb.CancelBackfillRequest, context: Context) -> pb.CancelBackfillResponse:
        backfill_id = usecases.parse_backfill_id(request.backfill_id)

        async def work(conn: AsyncConnection) -> pb.CancelBackfillResponse:
            return pb.CancelBackfillResponse(backfill=m.backfill_message(await usecases.cancel_backfill(conn, backfill_id)))

        return await self._idempotent("CancelBackfill", request, pb.CancelBackfillResponse, work)

    # --- blackout calendars ------------------------------------------------------------

    async def _store_calendar(self, method: str, request: Any, response_type: type[R], store: Callable) -> R:
        calendar = parse_calendar(request.calendar.name, request.calendar.time_zone,
                                  [(r.start, r.end) for r in request.calendar.ranges], request.calendar.description)

        async def work(conn: AsyncConnection) -> R:
            return response_type(calendar=m.calendar_message(await store(conn, calendar)))

        return await self._idempotent(method, request, response_type, work)

    async def CreateBlackoutCalendar(
        self, request: pb.CreateBlackoutCalendarRequest, context: Context
    ) -> pb.CreateBlackoutCalendarResponse:
        return await self._store_calendar("CreateBlackoutCalendar", request, pb.CreateBlackoutCalendarResponse,
                                          usecases.create_calendar)

    async def UpdateBlackoutCalendar(
        self, request: pb.UpdateBlackoutCalendarRequest, context: Context
    ) -> pb.UpdateBlackoutCalendarResponse:
        return await self._store_calendar("UpdateBlackoutCalendar", request, pb.UpdateBlackoutCalendarResponse,
                                          usecases.replace_calendar)

    async def GetBlackoutCalendar(
        self, request: pb.GetBlackoutCalendarRequest, context: Context
    ) -> pb.GetBlackoutCalendarResponse:
        name = _calendar_name(request.name)
        async with self._engine.connect() as conn:
            return pb.GetBlackoutCalendarResponse(calendar=m.calendar_message(await usecases.get_calendar(conn, name)))

    async def ListBlackoutCalendars(
        self, request: pb.ListBlackoutCalendarsRequest, context: Context
    ) -> pb.ListBlackoutCalendarsResponse:
        async with self._engine.connect() as conn:
            found = await calendar_store.calendars(conn)
        return pb.ListBlackoutCalendarsResponse(calendars=[m.calendar_message(c) for c in found])

    async def DeleteBlackoutCalendar(
        self, request: pb.DeleteBlackoutCalendarRequest, context: Context
    ) -> pb.DeleteBlackoutCalendarResponse:
        name = _calendar_name(request.name)

        async def work(conn: AsyncConnection) -> pb.DeleteBlackoutCalendarResponse:
            await usecases.delete_calendar(conn, name)
            return pb.DeleteBlackoutCalendarResponse()

        return await self._idempotent("DeleteBlackoutCalendar", request, pb.DeleteBlackoutCalendarResponse, work)
