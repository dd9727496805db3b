"""Backfills: a job run once per slot of its schedule over a past range, each slot's
time passed to the target as the run's logical time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from apscheduler.triggers.base import BaseTrigger

from services.scheduler.domain.errors import Problems
from services.scheduler.domain.schedules import firings_between

MAX_SLOTS = 10_000
MAX_CONCURRENCY = 32


class BackfillState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SlotCounts:
    """Each slot by the outcome of its latest attempt."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    pending: int = 0  # queued, running, or failed with a retry to come


def backfill_slots(trigger: BaseTrigger, start: datetime | None, end: datetime | None, now: datetime,
                   max_concurrency: int) -> list[datetime]:
    """The slots of a valid backfill request, or InvalidInput naming what is wrong."""
    problems = Problems()
    if start is None:
        problems.add("start_time", "required")
    if end is None:
        problems.add("end_time", "required")
    if start is not None and end is not None:
        if start >= end:
            problems.add("end_time", "must be after start_time")
        if end > now:
            problems.add("end_time", "a backfill covers the past: at most now")
    if not 0 <= max_concurrency <= MAX_CONCURRENCY:
        problems.add("max_concurrency", f"between 1 and {MAX_CONCURRENCY} (0: 1)")
    problems.raise_if_any()
    assert start is not None and end is not None
    slots = firings_between(trigger, start, end, MAX_SLOTS)
    if not slots:
        problems.add("start_time", "the job's schedule has no slot in this range")
    if len(slots) > MAX_SLOTS:
        problems.add("end_time", f"at most {MAX_SLOTS} slots per backfill")
    problems.raise_if_any()
    return slots


def final_state(counts: SlotCounts, cancelled: bool) -> BackfillState | None:
    """The state a backfill ends in once no slot is pending (None while one is)."""
    if cancelled:
        return BackfillState.CANCELLED
    if counts.pending:
        return None
    return BackfillState.FAILED if counts.failed else BackfillState.SUCCEEDED
