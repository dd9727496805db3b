"""Replay decisions: how what a rule would do compares with what the live rule did.

Pure: the use case (services/rules/replay.py) feeds it events and live executions.
Two runs are the same when they would run the same actions in the same order with
the same rendered parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.rules.domain.evaluation import PlannedAction

SAME, ADDED, REMOVED, CHANGED = "same", "added", "removed", "changed"


def diff(would: list[PlannedAction] | None, live: list[dict[str, Any]] | None) -> str | None:
    """How a replayed event compares with the live one; None when neither fired."""
    if would is None:
        return None if live is None else REMOVED
    if live is None:
        return ADDED
    replayed = [(a.type, a.params) for a in would]
    recorded = [(a["type"], a["params"]) for a in live]
    return SAME if replayed == recorded else CHANGED


@dataclass
class ReplayTally:
    """The summary of a replay, counted as results come."""

    events_scanned: int = 0
    would_fire: int = 0
    live_fired: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {SAME: 0, ADDED: 0, REMOVED: 0, CHANGED: 0})

    def count(self, outcome: str | None, *, would: bool, live: bool) -> None:
        self.events_scanned += 1
        self.would_fire += would
        self.live_fired += live
        if outcome is not None:
            self.counts[outcome] += 1
