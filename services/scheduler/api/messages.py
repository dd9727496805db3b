"""Protobuf messages <-> the scheduler's records and domain values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from loom.scheduler.v1 import scheduler_pb2 as pb

from services.scheduler.domain.blackouts import Calendar
from services.scheduler.domain.errors import InvalidInput, Violation
from services.scheduler.domain.jobs import JobSpec
from services.scheduler.domain.policies import CatchUpPolicy, OverlapPolicy
from services.scheduler.domain.runs import RunStatus, TriggerKind
from services.scheduler.domain.schedules import Schedule
from services.scheduler.store.records import BackfillRecord, JobRecord, RunRecord


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def instant(message, field: str) -> datetime | None:
    return getattr(message, field).ToDatetime(UTC) if message.HasField(field) else None


def struct(value: dict | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def plain(message: struct_pb2.Struct) -> dict:
    return json_format.MessageToDict(message)


def _enum_name(enum, value: int, prefix: str, field: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        raise InvalidInput([Violation(field, f"{value} is not a value of {enum.DESCRIPTOR.full_name}")]) from None


def run_status(value: int, field: str = "status") -> RunStatus | None:
    return None if value == 0 else RunStatus(_enum_name(pb.JobRunStatus, value, "JOB_RUN_STATUS_", field))


def trigger_kind(value: int, field: str = "trigger") -> TriggerKind | None:
    return None if value == 0 else TriggerKind(_enum_name(pb.TriggerKind, value, "TRIGGER_KIND_", field))


def overlap_policy(value: int, field: str = "overlap_policy") -> OverlapPolicy | None:
    return None if value == 0 else OverlapPolicy(_enum_name(pb.OverlapPolicy, value, "OVERLAP_POLICY_", field))


def overlap_message(policy: OverlapPolicy | None) -> pb.OverlapPolicy.ValueType:
    return pb.OVERLAP_POLICY_UNSPECIFIED if policy is None else pb.OverlapPolicy.Value(f"OVERLAP_POLICY_{policy.name}")


def schedule(message: pb.Schedule) -> Schedule:
    return Schedule(
        cron=" ".join(message.cron.split()),
        interval_seconds=message.interval_seconds,
        time_zone=message.time_zone,
        jitter_seconds=message.jitter_seconds,
        run_at=instant(message, "run_at"),
    )


def schedule_message(value: Schedule) -> pb.Schedule:
    return pb.Schedule(
        cron=value.cron, interval_seconds=value.interval_seconds, time_zone=value.time_zone,
        jitter_seconds=value.jitter_seconds, run_at=timestamp(value.run_at),
    )


def job_spec(message: pb.Job) -> JobSpec:
    return JobSpec(
        name=message.job_name,
        target=message.target,
        schedule=schedule(message.schedule),
        description=message.description,
        payload=plain(message.payload) if message.HasField("payload") else {},
        paused=message.paused,
        max_attempts=message.max_attempts,
        deadline_seconds=message.deadline_seconds,
        overlap_policy=overlap_policy(message.overlap_policy, "job.overlap_policy") or OverlapPolicy.SKIP,
        catch_up=CatchUpPolicy(message.catch_up.window_seconds, message.catch_up.coalesce),
        blackout_calendars=tuple(message.blackout_calendars),
    )


def run_message(run: RunRecord) -> pb.JobRun:
    return pb.JobRun(
        run_id=str(run.id),
        job_name=run.job_name,
        trigger=pb.TriggerKind.Value(f"TRIGGER_KIND_{run.trigger.name}"),
        attempt=run.attempt,
        status=pb.JobRunStatus.Value(f"JOB_RUN_STATUS_{run.status.name}"),
        start_time=timestamp(run.start_time),
        finish_time=timestamp(run.finish_time),
        duration_seconds=run.duration_seconds or 0.0,
        result=struct(run.result),
        error=run.error,
        params=struct(run.params),
        runner=run.runner,
        scheduled_time=timestamp(run.scheduled_time),
        firing_id=str(run.firing_id),
        next_attempt_time=timestamp(run.next_attempt_time),
        target_request_id=run.target_request_id,
        backfill_id=str(run.backfill_id) if run.backfill_id else "",
        decision=run.decision,
    )


def job_message(job: JobRecord, next_run_time: datetime | None, last: RunRecord | None, *,
                default_max_attempts: int, default_window: int) -> pb.Job:
    return pb.Job(
        job_name=job.name,
        description=job.description,
        target=job.target,
        schedule=schedule_message(job.schedule),
        paused=job.paused,
        next_run_time=timestamp(next_run_time),
        last_run=run_message(last) if last is not None else None,
        max_attempts=job.max_attempts or default_max_attempts,
        builtin=job.builtin,
        payload=struct(job.payload),
        overlap_policy=overlap_message(job.overlap_policy),
        catch_up=pb.CatchUpPolicy(window_seconds=job.catch_up_window_seconds or default_window,
                                  coalesce=job.catch_up_coalesce),
        deadline_seconds=job.deadline_seconds or 0.0,
        blackout_calendars=list(job.blackout_calendars),
    )


def backfill_message(backfill: BackfillRecord) -> pb.Backfill:
    counts = backfill.counts
    return pb.Backfill(
        backfill_id=str(backfill.id),
        job_name=backfill.job_name,
        start_time=timestamp(backfill.start_time),
        end_time=timestamp(backfill.end_time),
        max_concurrency=backfill.max_concurrency,
        overlap_policy=overlap_message(backfill.overlap_policy),
        state=pb.BackfillState.Value(f"BACKFILL_STATE_{backfill.state.name}"),
        slots=backfill.slots,
        succeeded=counts.succeeded,
        failed=counts.failed,
        skipped=counts.skipped,
        cancelled=counts.cancelled,
        pending=counts.pending,
        create_time=timestamp(backfill.create_time),
        finish_time=timestamp(backfill.finish_time),
    )


def calendar_message(calendar: Calendar) -> pb.BlackoutCalendar:
    return pb.BlackoutCalendar(
        name=calendar.name, description=calendar.description, time_zone=calendar.time_zone,
        ranges=[pb.BlackoutRange(start=r.start.isoformat(), end=r.end.isoformat()) for r in calendar.ranges],
    )
