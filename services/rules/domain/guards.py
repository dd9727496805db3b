"""Loop and runaway guards: pure decisions over an event's causation chain and a rule's recent runs.

An event caused by a rule's action carries its causation chain in `data.causation`:
one link {rule_id, execution_id, event_id} per rule execution that led to it, oldest
first. The rules service sends the chain (plus the new link) with every action call
(`loom-causation` metadata, libs/causation.py) so the producing service puts it on the
events it emits (batch: its outbox's `causation`, delivered as `data.causation`).

- A rule is not triggered by an event caused by a rule's action unless it opts in
  (`triggered_by_rules`).
- A rule that already ran `max_depth` times in the chain is refused: its effect would
  re-trigger it once more (a self-triggering rule stops there, chain recorded).
- A rule with `max_executions_per_minute` is refused beyond that rate.
- A rule whose last `breaker_failures` executions all failed is deactivated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CAUSATION_KEY = "causation"


@dataclass(frozen=True, slots=True)
class Link:
    rule_id: str
    execution_id: str
    event_id: str

    def as_dict(self) -> dict[str, str]:
        return {"rule_id": self.rule_id, "execution_id": self.execution_id, "event_id": self.event_id}


def causation_of(data: dict[str, Any]) -> list[Link]:
    """The chain an event carries (empty for events no rule caused); malformed links are ignored."""
    chain = data.get(CAUSATION_KEY)
    if not isinstance(chain, list):
        return []
    return [
        Link(str(link.get("rule_id", "")), str(link.get("execution_id", "")), str(link.get("event_id", "")))
        for link in chain
        if isinstance(link, dict)
    ]


def refusal(rule_id: str, chain: list[Link], *, max_depth: int, per_minute: int, last_minute: int) -> str:
    """Why a matched rule must not run for this event ('' when it may)."""
    depth = sum(1 for link in chain if link.rule_id == rule_id)
    if depth >= max_depth:
        return f"loop guard: the rule already ran {depth} times in this event's causation chain (limit {max_depth})"
    if per_minute and last_minute >= per_minute:
        return f"rate limit: {last_minute} executions in the last minute (limit {per_minute})"
    return ""


def breaker_trips(latest_statuses: list[str], failures: int) -> bool:
    """True when the rule's latest `failures` finished executions all failed."""
    return failures > 0 and len(latest_statuses) >= failures and all(s == "failed" for s in latest_statuses[:failures])
