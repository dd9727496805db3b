"""What happens to a firing that meets a run in progress (overlap), and to firings
missed while no replica led or the job was paused (catch-up).

Named as Temporal Schedules and Kubernetes CronJobs name them; pure decisions,
unit-tested at their edges in tests/scheduler/test_policies.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class OverlapPolicy(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    ALLOW_ALL = "allow_all"


class Action(StrEnum):
    START = "start"
    QUEUE = "queue"  # wait; starts when no run of the job is in progress
    SKIP = "skip"


@dataclass(frozen=True)
class OverlapDecision:
    action: Action
    # Runs to cancel: the one in progress (CANCEL_OTHER) and firings it supersedes.
    cancel: tuple[str, ...] = ()
    reason: str = ""


def decide_overlap(
    policy: OverlapPolicy, running: Sequence[str], queued: Sequence[str]
) -> OverlapDecision:
    """The decision for a new firing, given the ids of the job's runs in progress and
    of its firings already waiting (oldest first)."""
    if policy == OverlapPolicy.ALLOW_ALL:
        return OverlapDecision(Action.START)
    if not running:
        # Waiting firings go first; one may be between its predecessor's end and its start.
        if queued and policy in (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL):
            return _queue_or_skip(policy, running, queued)
        return OverlapDecision(Action.START)
    busy = f"run {running[0]} was still in progress"
    if policy == OverlapPolicy.SKIP:
        return OverlapDecision(Action.SKIP, reason=f"overlap policy SKIP: {busy}")
    if policy == OverlapPolicy.CANCEL_OTHER:
        return OverlapDecision(
            Action.QUEUE, cancel=(*running, *queued),
            reason=f"overlap policy CANCEL_OTHER: cancelled {', '.join((*running, *queued))}; starts once stopped",
        )
    return _queue_or_skip(policy, running, queued)


def _queue_or_skip(policy: OverlapPolicy, running: Sequence[str], queued: Sequence[str]) -> OverlapDecision:
    ahead = running[0] if running else queued[0]
    if policy == OverlapPolicy.BUFFER_ONE and queued:
        return OverlapDecision(Action.SKIP, reason=f"overlap policy BUFFER_ONE: firing {queued[0]} already waits")
    return OverlapDecision(Action.QUEUE, reason=f"overlap policy {policy.name}: waits for run {ahead}")


def cancelled_reason(by: str) -> str:
    return f"overlap policy CANCEL_OTHER: cancelled by the later firing {by}"


# --- catch-up --------------------------------------------------------------------------

# Missed firings recorded one row each, at most; older ones share one row.
MAX_MISSED_ROWS = 100


@dataclass(frozen=True)
class CatchUpPolicy:
    window_seconds: int
    coalesce: bool


@dataclass(frozen=True)
class Firing:
    time: datetime
    run: bool
    reason: str = ""  # why it does not run


def plan_catch_up(times: Sequence[datetime], now: datetime, policy: CatchUpPolicy) -> list[Firing]:
    """What to do with the firings due by `now` (oldest first): those at most the
    window late run (each, or only the latest when coalescing); older ones are
    recorded as missed — the oldest beyond MAX_MISSED_ROWS folded into one record."""
    window = timedelta(seconds=policy.window_seconds)
    late = [t for t in times if now - t > window]
    due = [t for t in times if now - t <= window]
    plan: list[Firing] = []
    if len(late) > MAX_MISSED_ROWS:
        folded = len(late) - MAX_MISSED_ROWS + 1
        plan.append(Firing(late[0], False, f"missed: {folded} firings from {late[0].isoformat()} "
                                           f"to {late[folded - 1].isoformat()} fell outside the "
                                           f"{policy.window_seconds}s catch-up window"))
        late = late[folded:]
    plan += [
        Firing(t, False, f"missed by {(now - t).total_seconds():.0f}s: outside the {policy.window_seconds}s "
                         "catch-up window")
        for t in late
    ]
    if policy.coalesce and len(due) > 1:
        keep = due[-1]
        plan += [Firing(t, False, f"coalesced into the firing at {keep.isoformat()}") for t in due[:-1]]
        due = [keep]
    plan += [Firing(t, True) for t in due]
    return plan
