"""What a job run can be, and the retry decisions after a failed attempt."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"  # buffered by the overlap policy, or a backfill slot not started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # this attempt failed; a retry follows
    DEAD_LETTERED = "dead_lettered"  # the last allowed attempt failed
    INTERRUPTED = "interrupted"  # the replica running it died
    SKIPPED = "skipped"  # a policy decided not to run it (overlap, catch-up, blackout)
    CANCELLED = "cancelled"  # stopped on purpose (CANCEL_OTHER, a cancelled backfill)


FINISHED_STATUSES = frozenset(RunStatus) - {RunStatus.RUNNING, RunStatus.QUEUED}


class TriggerKind(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    BACKFILL = "backfill"


def retry_delay_seconds(attempt: int, *, base: float, maximum: float) -> float:
    """Delay after failed attempt `attempt` (1-based): base, 2*base, 4*base... capped."""
    return min(maximum, base * 2 ** (attempt - 1))


def next_status_after_failure(attempt: int, max_attempts: int, transient: bool) -> RunStatus:
    return RunStatus.FAILED if transient and attempt < max_attempts else RunStatus.DEAD_LETTERED
