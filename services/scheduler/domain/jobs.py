"""A job's definition as an admin gives it: what it calls, when, and its policies.

Checks that need no I/O live here; whether the target is on the allow-list and
the payload fits its request message is the target adapter's (targets.py), and
whether named calendars exist is the store's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.scheduler.domain.blackouts import NAME as CALENDAR_NAME
from services.scheduler.domain.errors import InvalidInput, Problems, Violation, WrongState
from services.scheduler.domain.policies import CatchUpPolicy, OverlapPolicy
from services.scheduler.domain.schedules import Schedule, validate_schedule

NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
MAX_ATTEMPTS = 20
MAX_DEADLINE_SECONDS = 24 * 3600.0
MAX_CATCH_UP_WINDOW_SECONDS = 366 * 24 * 3600
MAX_DESCRIPTION = 500

UPDATABLE = frozenset({
    "description", "target", "payload", "schedule", "paused", "max_attempts", "deadline_seconds",
    "overlap_policy", "catch_up", "blackout_calendars",
})
# What defines a built-in job is its code; an admin changes only when and how it runs.
FIXED_WHEN_BUILTIN = frozenset({"description", "target", "payload"})


@dataclass(frozen=True)
class JobSpec:
    name: str
    target: str
    schedule: Schedule
    description: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    max_attempts: int = 0  # 0: the configured default
    deadline_seconds: float = 0.0  # 0: the configured default
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    catch_up: CatchUpPolicy = CatchUpPolicy(window_seconds=0, coalesce=False)  # window 0: the default
    blackout_calendars: tuple[str, ...] = ()


def validate_job(spec: JobSpec, prefix: str = "job") -> list[Violation]:
    """Every violation of the spec's own fields (empty when fine)."""
    problems = Problems()
    if not NAME.fullmatch(spec.name):
        problems.add(f"{prefix}.job_name", "lower-case letters, digits and '-', starting with a letter, at most 63")
    if not spec.target:
        problems.add(f"{prefix}.target", "required: a schedulable RPC, e.g. loom.batch.v1.BatchService/Orchestrate")
    if len(spec.description) > MAX_DESCRIPTION or "\x00" in spec.description:
        problems.add(f"{prefix}.description", f"at most {MAX_DESCRIPTION} characters, no NUL")
    try:
        validate_schedule(spec.schedule, field=f"{prefix}.schedule")
    except InvalidInput as invalid:
        problems.extend(invalid.violations)
    if not 0 <= spec.max_attempts <= MAX_ATTEMPTS:
        problems.add(f"{prefix}.max_attempts", f"between 1 and {MAX_ATTEMPTS} (0: the default)")
    if not 0 <= spec.deadline_seconds <= MAX_DEADLINE_SECONDS:
        problems.add(f"{prefix}.deadline_seconds", f"between 0 (the default) and {MAX_DEADLINE_SECONDS:.0f}")
    if not 0 <= spec.catch_up.window_seconds <= MAX_CATCH_UP_WINDOW_SECONDS:
        problems.add(f"{prefix}.catch_up.window_seconds",
                     f"between 0 (the default) and {MAX_CATCH_UP_WINDOW_SECONDS}")
    if len(set(spec.blackout_calendars)) != len(spec.blackout_calendars):
        problems.add(f"{prefix}.blackout_calendars", "names a calendar twice")
    for i, calendar in enumerate(spec.blackout_calendars):
        if not CALENDAR_NAME.fullmatch(calendar):
            problems.add(f"{prefix}.blackout_calendars[{i}]", "not a calendar name")
    return problems.found


def check_update_paths(paths: Iterable[str], builtin: bool, name: str) -> frozenset[str]:
    """The fields an update mask names (all updatable ones when empty)."""
    chosen = frozenset(paths) or (UPDATABLE - FIXED_WHEN_BUILTIN if builtin else UPDATABLE)
    unknown = chosen - UPDATABLE
    if unknown:
        raise InvalidInput([Violation("update_mask", f"cannot update {', '.join(sorted(unknown))}; "
                                                     f"updatable: {', '.join(sorted(UPDATABLE))}")])
    fixed = chosen & FIXED_WHEN_BUILTIN
    if builtin and fixed:
        raise WrongState(f"{name} is a built-in job: only its schedule and policies change, not "
                         f"{', '.join(sorted(fixed))}", subject=f"jobs/{name}")
    return chosen
