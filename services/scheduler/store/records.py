"""The records the store hands out: frozen, typed, never a database row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.scheduler.domain.backfills import BackfillState, SlotCounts
from services.scheduler.domain.jobs import JobSpec
from services.scheduler.domain.policies import CatchUpPolicy, OverlapPolicy
from services.scheduler.domain.runs import RunStatus, TriggerKind
from services.scheduler.domain.schedules import Schedule


@dataclass(frozen=True)
class Runner:
    """Who executes a run: a replica's name and the key of its liveness lock."""

    name: str
    key: int


@dataclass(frozen=True)
class JobRecord:
    name: str
    builtin: bool
    description: str
    target: str
    payload: dict[str, Any]
    schedule: Schedule
    paused: bool
    paused_time: datetime | None
    max_attempts: int | None  # None: the configured default
    deadline_seconds: float | None
    overlap_policy: OverlapPolicy
    catch_up_window_seconds: int | None
    catch_up_coalesce: bool
    blackout_calendars: tuple[str, ...]
    version: int
    applied_version: int
    update_time: datetime | None = None  # when the job was last defined or changed

    def spec(self) -> JobSpec:
        return JobSpec(
            name=self.name, target=self.target, schedule=self.schedule, description=self.description,
            payload=self.payload, paused=self.paused, max_attempts=self.max_attempts or 0,
            deadline_seconds=self.deadline_seconds or 0.0, overlap_policy=self.overlap_policy,
            catch_up=CatchUpPolicy(self.catch_up_window_seconds or 0, self.catch_up_coalesce),
            blackout_calendars=self.blackout_calendars,
        )


@dataclass(frozen=True)
class RunRecord:
    id: uuid.UUID
    job_name: str
    firing_id: uuid.UUID
    trigger: TriggerKind
    attempt: int
    status: RunStatus
    scheduled_time: datetime | None
    start_time: datetime
    finish_time: datetime | None
    duration_seconds: float | None
    result: dict[str, Any] | None
    error: str
    params: dict[str, Any]
    runner: str
    target_request_id: str
    next_attempt_time: datetime | None
    backfill_id: uuid.UUID | None
    decision: str


@dataclass(frozen=True)
class BackfillRecord:
    id: uuid.UUID
    job_name: str
    start_time: datetime
    end_time: datetime
    max_concurrency: int
    overlap_policy: OverlapPolicy | None  # None: the job's
    state: BackfillState
    slots: int
    create_time: datetime
    finish_time: datetime | None
    counts: SlotCounts


@dataclass(frozen=True)
class Summary:
    runs: int
    succeeded: int
    failed: int
    dead_lettered: int
    interrupted: int
    skipped: int
    average_duration: float
    p95_duration: float
    last_error: str
    last_error_time: datetime | None
