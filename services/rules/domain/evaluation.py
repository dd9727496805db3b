"""Evaluating active rules against one event: order, event-type filter, stop-processing, traces.

The same loop serves the hot path (matches only) and the dry run (a trace per rule
with each leaf's actual value and the actions as they would run).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.rules.domain.conditions import (
    CompiledCondition,
    ConditionTrace,
    compile_condition,
    fact_paths,
)
from services.rules.domain.operators import DEFAULT_LIMITS, RegexLimits
from services.rules.domain.templates import RenderError, render, variables
from services.rules.domain.vocabulary import DECISION_ROOT, FETCHED_ROOTS, WINDOW_ROOT

# Namespace of action request ids: uuid5(namespace, "<execution id>:<action index>").
ACTION_REQUEST_NAMESPACE = uuid.UUID("6f1d8a3e-2b7c-4c1e-9a57-3f0e2d4b8c61")


@dataclass(frozen=True)
class ActiveRule:
    """A rule as the evaluator sees it: compiled once per (rule, version)."""

    rule_id: str
    name: str
    version: int
    priority: int
    event_types: frozenset[str]
    stop_processing: bool
    condition: CompiledCondition
    actions: tuple[dict[str, Any], ...]
    triggered_by_rules: bool = False
    max_executions_per_minute: int = 0
    # condition.test, one attribute lookup nearer for the hot loop.
    test: Callable[[dict[str, Any]], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", self.condition.test)

    @classmethod
    def compile(
        cls,
        *,
        rule_id: str,
        name: str,
        version: int,
        priority: int,
        event_types: list[str],
        stop_processing: bool,
        conditions: dict,
        actions: list[dict[str, Any]],
        limits: RegexLimits = DEFAULT_LIMITS,
        triggered_by_rules: bool = False,
        max_executions_per_minute: int = 0,
    ) -> ActiveRule:
        return cls(
            rule_id,
            name,
            version,
            priority,
            frozenset(event_types),
            stop_processing,
            compile_condition(conditions, limits),
            tuple(actions),
            triggered_by_rules,
            max_executions_per_minute,
        )

    def listens_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def fact_paths(self) -> list[str]:
        return fact_paths(self.condition.tree) + [v for a in self.actions for v in variables(a.get("params"))]

    def fact_roots(self) -> set[str]:
        return {path.partition(".")[0] for path in self.fact_paths()}


def in_evaluation_order(rules: list[ActiveRule]) -> list[ActiveRule]:
    """Highest priority first; ties in a stable order (by id)."""
    return sorted(rules, key=lambda r: (-r.priority, r.rule_id))


@dataclass
class PlannedAction:
    index: int
    type: str
    params: dict[str, Any]
    # Set when the parameters could not be rendered: the action fails without running.
    error: str = ""


@dataclass(slots=True)
class RuleOutcome:
    rule: ActiveRule
    matched: bool
    skipped_reason: str = ""
    trace: ConditionTrace | None = None
    actions: list[PlannedAction] = field(default_factory=list)

    def action_facts(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The facts the rule's actions render with: the event's, plus its decision table's outputs.

        Decided here, when actions are planned, not while matching: the hot path only
        needs to know that the table yields a result (as it leaves rendering for later).
        """
        decide = self.rule.condition.decide
        if decide is None:
            return facts
        return {**facts, DECISION_ROOT: decide(facts).outputs}


def event_facts(event_id: str, event_type: str, source: str, occurred_time: str, data: dict[str, Any]) -> dict[str, Any]:
    """The facts of an event: its data keyed by entity, plus the event itself under `event`."""
    return {**data, "event": {"id": event_id, "type": event_type, "source": source, "occurred_time": occurred_time}}


def facts_to_fetch(rules: list[ActiveRule], event_type: str, facts: dict[str, Any]) -> set[str]:
    """Fetchable facts that rules listening to this event name and the event lacks: roots, and
    `window.<name>` for each windowed fact named."""
    return wanted_facts({path for r in rules if r.listens_to(event_type) for path in r.fact_paths()}, facts)


def wanted_facts(paths: set[str] | list[str], facts: dict[str, Any]) -> set[str]:
    """Of the fact paths named, what to fetch: missing fetchable roots, and each `window.<name>`."""
    roots = {path.partition(".")[0] for path in paths}
    wanted = {root for root in roots & FETCHED_ROOTS if root not in facts and root != WINDOW_ROOT}
    return wanted | {path for path in paths if path.startswith(WINDOW_ROOT + ".")}


def evaluate(
    rules: list[ActiveRule], event_type: str, facts: dict[str, Any], *, traced: bool = False, caused_by_rule: bool = False
) -> list[RuleOutcome]:
    """Outcomes in evaluation order; without `traced`, only the matched rules (the hot path),
    and their actions are left for `plan_actions` when they are to run.

    For an event a rule's action caused, only the rules that opt in are evaluated."""
    if not traced:
        return _matches([r for r in rules if r.triggered_by_rules] if caused_by_rule else rules, event_type, facts)
    outcomes: list[RuleOutcome] = []
    stopped_by: ActiveRule | None = None
    for rule in rules:
        if caused_by_rule and not rule.triggered_by_rules:
            outcomes.append(RuleOutcome(rule, False, "caused by a rule's action; the rule does not opt in"))
            continue
        if stopped_by is not None:
            outcomes.append(RuleOutcome(rule, False, f"stopped by rule {stopped_by.name!r} ({stopped_by.rule_id})"))
            continue
        if not rule.listens_to(event_type):
            outcomes.append(RuleOutcome(rule, False, f"does not listen to {event_type!r}"))
            continue
        trace = rule.condition.trace(facts)
        if trace.passed:
            # Rendering is the executor's business; the dry run shows it too.
            outcome = RuleOutcome(rule, True, trace=trace)
            outcome.actions = plan_actions(rule.actions, outcome.action_facts(facts))
            outcomes.append(outcome)
            if rule.stop_processing:
                stopped_by = rule
        else:
            outcomes.append(RuleOutcome(rule, False, trace=trace))
    return outcomes


def _matches(rules: list[ActiveRule], event_type: str, facts: dict[str, Any]) -> list[RuleOutcome]:
    """The hot path: the matched rules only, with as little work per rule as the loop allows."""
    outcomes = []
    for rule in rules:
        listened = rule.event_types
        if listened and event_type not in listened:
            continue
        if rule.test(facts):
            outcomes.append(RuleOutcome(rule, True))
            if rule.stop_processing:
                break
    return outcomes


def plan_actions(actions: tuple[dict[str, Any], ...] | list[dict[str, Any]], facts: dict[str, Any]) -> list[PlannedAction]:
    planned = []
    for index, action in enumerate(actions):
        try:
            planned.append(PlannedAction(index, action["type"], render(action.get("params") or {}, facts)))
        except RenderError as error:
            planned.append(PlannedAction(index, action["type"], dict(action.get("params") or {}), str(error)))
    return planned


def execution_status(action_statuses: list[str]) -> str:
    """success when every action succeeded, failed when none did, partial otherwise."""
    succeeded = sum(1 for s in action_statuses if s == "succeeded")
    if succeeded == len(action_statuses):
        return "success"
    return "failed" if succeeded == 0 else "partial"


def action_request_id(execution_id: str, index: int) -> str:
    """The idempotency key of an action's call: the same for every retry and every resume."""
    return str(uuid.uuid5(ACTION_REQUEST_NAMESPACE, f"{execution_id}:{index}"))
