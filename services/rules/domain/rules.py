"""A rule's definition and its validation on save: every problem is a field violation, nothing saved."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from services.rules.domain.conditions import Violation, normalise, table_findings
from services.rules.domain.nodes import from_tree, tables
from services.rules.domain.operators import DEFAULT_LIMITS, RegexLimits
from services.rules.domain.tables import shown
from services.rules.domain.templates import template_problems, variables
from services.rules.domain.vocabulary import DECISION_ROOT
from services.rules.domain.waits import MAX_WAIT_SECONDS

RULE_TYPES = ("auto_assignment", "status_update", "notification", "workflow")
EVENT_TYPES = frozenset(
    {
        "order.placed",
        "order.status_changed",
        "order.supplier_assigned",
        "order.cancelled",
        "order.refunded",
        "batch.opened",
        "batch.confirmed",
        "batch.nearing_target",
        "batch.closing_soon",
        "batch.needs_review",
        "batch.cancelled",
        "batch.status_changed",
    }
)
ORDER_STATUSES = frozenset(
    {"placed", "awaiting_supplier", "confirmed", "in_production", "shipped", "delivered", "cancelled", "refunded"}
)
# The batch service advances a batch only along its lifecycle (AdvanceBatch).
BATCH_STATUSES = frozenset({"in_production", "completed"})
ENTITIES = ("order", "batch")
# The lifecycles as the batch service enforces them (UpdateOrderStatus, AdvanceBatch refuse
# other moves): each status update_status may set, with the statuses it is reached from.
# Part of the cross-service contract like the events' data; tests/rules/test_vocabulary.py
# holds it equal to the batch service's own tables.
REACHED_FROM: dict[str, dict[str, tuple[str, ...]]] = {
    "order": {
        "placed": ("awaiting_supplier",),
        "awaiting_supplier": ("placed",),
        "confirmed": ("awaiting_supplier", "placed"),
        "in_production": ("confirmed",),
        "shipped": ("in_production",),
        "delivered": ("shipped",),
        "cancelled": ("awaiting_supplier", "placed"),
        "refunded": (),
    },
    "batch": {"in_production": ("confirmed",), "completed": ("in_production",)},
}
MAX_NAME_LENGTH = 200
MAX_ACTIONS = 20


class InvalidRule(Exception):
    """A rule that cannot be saved: every problem, as field violations (the servicer maps it to INVALID_ARGUMENT)."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


@dataclass(frozen=True)
class ActionSpec:
    required: frozenset[str]
    optional: frozenset[str] = frozenset()


ACTIONS: dict[str, ActionSpec] = {
    "update_status": ActionSpec(frozenset({"entity", "id", "status"}), frozenset({"reason"})),
    "assign_supplier": ActionSpec(frozenset({"entity", "id", "supplier_id"}), frozenset({"priority"})),
    "send_email": ActionSpec(frozenset({"recipient", "subject", "body"})),
    "trigger_workflow": ActionSpec(frozenset({"job"}), frozenset({"params"})),
    "wait": ActionSpec(frozenset({"seconds"}), frozenset({"conditions"})),
    # An inbox notification for one user or for everyone of a role (see WatchNotifications).
    "notify": ActionSpec(frozenset({"subject", "body"}), frozenset({"user", "role"})),
}
ROLES = ("admin", "buyer", "supplier", "service")
# Actions whose parameters are not templates: a wait's are a number and a condition tree.
# Every other action's string values are rendered with the event's facts before it runs.
UNTEMPLATED_ACTIONS = frozenset({"wait"})


@dataclass
class RuleDefinition:
    """What a user defines; the store adds identity, version and audit."""

    name: str
    type: str
    description: str = ""
    active: bool = True
    priority: int = 0
    event_types: list[str] = field(default_factory=list)
    conditions: Any = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    stop_processing: bool = False
    # Run also for events that another rule's action caused (see domain/guards.py).
    triggered_by_rules: bool = False
    # At most this many executions per minute (0: no limit).
    max_executions_per_minute: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "active": self.active,
            "priority": self.priority,
            "event_types": list(self.event_types),
            "conditions": self.conditions,
            "actions": self.actions,
            "stop_processing": self.stop_processing,
            "triggered_by_rules": self.triggered_by_rules,
            "max_executions_per_minute": self.max_executions_per_minute,
        }


# Every field of a definition: what a version snapshots and what an update may change.
DEFINITION_FIELDS = tuple(f.name for f in fields(RuleDefinition))


def validated(rule: RuleDefinition, limits: RegexLimits = DEFAULT_LIMITS, where: str = "rule") -> RuleDefinition:
    """The rule with its conditions normalised to the tree; InvalidRule listing every problem."""
    found: list[Violation] = []
    if not rule.name.strip():
        found.append(Violation(f"{where}.name", "required"))
    elif len(rule.name) > MAX_NAME_LENGTH:
        found.append(Violation(f"{where}.name", f"at most {MAX_NAME_LENGTH} characters"))
    if rule.max_executions_per_minute < 0:
        found.append(Violation(f"{where}.max_executions_per_minute", "0 (no limit) or more"))
    if rule.type not in RULE_TYPES:
        found.append(Violation(f"{where}.type", f"one of {', '.join(RULE_TYPES)}"))
    for i, event_type in enumerate(rule.event_types):
        if event_type not in EVENT_TYPES:
            found.append(Violation(f"{where}.event_types[{i}]", f"unknown event type {event_type!r}"))
    tree = normalise(rule.conditions, f"{where}.conditions", found, limits)
    if not found:
        found += _table_problems(tree, f"{where}.conditions", limits)
    if not rule.actions:
        found.append(Violation(f"{where}.actions", "at least one action"))
    elif len(rule.actions) > MAX_ACTIONS:
        found.append(Violation(f"{where}.actions", f"at most {MAX_ACTIONS} actions"))
    outputs = _decision_outputs(tree)
    actions = [_normalised_wait(a, f"{where}.actions[{i}]", found, limits) for i, a in enumerate(rule.actions)]
    for i, action in enumerate(rule.actions):
        _check_action(action, f"{where}.actions[{i}]", found)
        for name, value in (action.get("params") or {}).items() if isinstance(action, dict) else ():
            for variable in variables(value):
                root, _, output = variable.partition(".")
                if root == DECISION_ROOT and output not in outputs:
                    known = ", ".join(sorted(outputs)) or "none: the rule has no decision table"
                    found.append(Violation(f"{where}.actions[{i}].params.{name}", f"{{{{{variable}}}}}: outputs are {known}"))
    if found:
        raise InvalidRule(found)
    return RuleDefinition(**{**rule.as_dict(), "conditions": tree, "actions": actions})


def _normalised_wait(action: Any, where: str, found: list[Violation], limits: RegexLimits) -> Any:
    """A wait action with its seconds checked and its conditions in the tree form."""
    if not isinstance(action, dict) or action.get("type") != "wait":
        return action
    params = dict(action.get("params") or {})
    seconds = params.get("seconds")
    if "seconds" in params and (
        not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= MAX_WAIT_SECONDS
    ):
        found.append(Violation(f"{where}.params.seconds", f"a number of seconds, more than 0 and at most {MAX_WAIT_SECONDS}"))
    if "conditions" in params:
        params["conditions"] = normalise(params["conditions"], f"{where}.params.conditions", found, limits)
    return {**action, "params": params}


def _decision_outputs(tree: dict) -> set[str]:
    found = tables(from_tree(tree)) if tree else []
    return {output.name for table in found for output in table.outputs}


def _table_problems(tree: dict, where: str, limits: RegexLimits) -> list[Violation]:
    """Rows that the hit policy forbids to overlap (UNIQUE: any two; ANY: two with different outputs)."""
    findings = table_findings(tree, limits)
    if findings is None:
        return []
    (table,) = tables(from_tree(tree))
    problems = []
    for a, b, example in findings.overlaps:
        if table.hit_policy == "UNIQUE" or (table.hit_policy == "ANY" and table.rows[a].outputs != table.rows[b].outputs):
            problems.append(
                Violation(
                    f"{where}.table.rules[{b}]", f"overlaps rules[{a}] under {table.hit_policy}: both match {shown(example)}"
                )
            )
    return problems


def table_warnings(definition: RuleDefinition, limits: RegexLimits = DEFAULT_LIMITS) -> list[str]:
    """What a valid rule's decision table leaves open: input combinations no row covers."""
    findings = table_findings(definition.conditions, limits) if definition.conditions else None
    if findings is None:
        return []
    if not findings.checked:
        return ["the decision table uses operators that cannot be checked for overlaps and gaps on save"]
    return [f"no table rule matches {shown(example)}: the rule does not fire there" for example in findings.gaps]


def _check_action(action: dict[str, Any], where: str, found: list[Violation]) -> None:
    spec = ACTIONS.get(action.get("type"))  # type: ignore[arg-type]
    if spec is None:
        found.append(Violation(f"{where}.type", f"unknown action; one of {', '.join(ACTIONS)}"))
        return
    params = action.get("params") or {}
    for name in sorted(spec.required - params.keys()):
        found.append(Violation(f"{where}.params.{name}", "required"))
    for name in sorted(params.keys() - spec.required - spec.optional):
        found.append(Violation(f"{where}.params.{name}", f"not a parameter of {action['type']}"))
    for name, value in params.items():
        if action["type"] in UNTEMPLATED_ACTIONS:
            break
        for problem in template_problems(value):
            found.append(Violation(f"{where}.params.{name}", problem))
    literal = {name: value for name, value in params.items() if not variables(value)}
    entity = params.get("entity")
    if "entity" in params and entity not in ENTITIES:
        found.append(Violation(f"{where}.params.entity", "order or batch"))
    if action["type"] == "update_status" and "status" in literal and entity in ENTITIES:
        allowed = ORDER_STATUSES if entity == "order" else BATCH_STATUSES
        if literal["status"] not in allowed:
            found.append(Violation(f"{where}.params.status", f"a {entity} status: {', '.join(sorted(allowed))}"))
    if "priority" in literal and (
        not isinstance(literal["priority"], int | float) or literal["priority"] != int(literal["priority"])
    ):
        found.append(Violation(f"{where}.params.priority", "a whole number"))
    if "recipient" in literal and (not isinstance(literal["recipient"], str) or "@" not in literal["recipient"]):
        found.append(Violation(f"{where}.params.recipient", "an e-mail address or a template"))
    if action["type"] == "notify":
        if ("user" in params) == ("role" in params):
            found.append(Violation(f"{where}.params", "exactly one of user or role"))
        if "role" in literal and literal["role"] not in ROLES:
            found.append(Violation(f"{where}.params.role", f"one of {', '.join(ROLES)}"))
    if "params" in params and not isinstance(params["params"], dict):
        found.append(Violation(f"{where}.params.params", "an object"))
    for name in ("id", "supplier_id", "subject", "body", "job", "status", "user"):
        if name in literal and not (isinstance(literal[name], str) and literal[name].strip()):
            found.append(Violation(f"{where}.params.{name}", "a non-empty string or a template"))
