"""Proto <-> domain conversion for the rules service: messages in, records and definitions out, and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from loom.common.v1 import event_pb2
from loom.rules.v1 import rules_pb2

from libs.errors import FieldViolation, InvalidArgument, Violations
from services.rules.domain.conditions import ConditionTrace
from services.rules.domain.diff import Change
from services.rules.domain.evaluation import PlannedAction, RuleOutcome
from services.rules.domain.operators import RegexLimits
from services.rules.domain.replay import SAME, ReplayTally
from services.rules.domain.rules import (
    DEFINITION_FIELDS,
    InvalidRule,
    RuleDefinition,
    validated,
)
from services.rules.records import ExecutionRecord, NotificationRecord, RuleRecord, StoredEvent, WaitRecord
from services.rules.replay import ReplayItem

if TYPE_CHECKING:
    # The generic metaclass of mypy-protobuf's enums (stubs only): ties each enum to its ValueType.
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

UPDATABLE = DEFINITION_FIELDS
MAX_EVENT_ID_LENGTH = 128

_V = TypeVar("_V", bound=int)


def enum_name(enum: _EnumTypeWrapper[_V], value: _V, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def enum_value(enum: _EnumTypeWrapper[_V], name: str | None, prefix: str) -> _V:
    # 0 is every proto3 enum's UNSPECIFIED value.
    return enum.Value(f"{prefix}{name.upper()}") if name else cast(_V, 0)


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def to_value(python: Any) -> struct_pb2.Value:
    return json_format.ParseDict(python, struct_pb2.Value())


def to_struct(python: dict[str, Any]) -> struct_pb2.Struct:
    # Struct.update converts in C: a few times faster than json_format.ParseDict, same message.
    message = struct_pb2.Struct()
    message.update(python)
    return message


def to_python(message) -> Any:
    return json_format.MessageToDict(message)


# --- rules ------------------------------------------------------------------------------


def rule_to_proto(rule: RuleRecord) -> rules_pb2.Rule:
    return rules_pb2.Rule(
        rule_id=rule.rule_id,
        name=rule.name,
        description=rule.description,
        type=enum_value(rules_pb2.RuleType, rule.type, "RULE_TYPE_"),
        active=rule.active,
        priority=rule.priority,
        event_types=rule.event_types,
        conditions=to_value(rule.conditions),
        actions=[
            rules_pb2.Action(type=enum_value(rules_pb2.ActionType, a["type"], "ACTION_TYPE_"), params=to_struct(a["params"]))
            for a in rule.actions
        ],
        stop_processing=rule.stop_processing,
        version=rule.version,
        created_by=rule.created_by,
        updated_by=rule.updated_by,
        create_time=timestamp(rule.create_time),
        update_time=timestamp(rule.update_time),
        last_execution_status=enum_value(rules_pb2.ExecutionStatus, rule.last_execution_status, "EXECUTION_STATUS_"),
        last_execution_time=timestamp(rule.last_execution_time),
        triggered_by_rules=rule.triggered_by_rules,
        max_executions_per_minute=rule.max_executions_per_minute,
        deactivated_reason=rule.deactivated_reason,
    )


def checked(rule: RuleDefinition, limits: RegexLimits, where: str = "rule") -> RuleDefinition:
    """The validated rule; the domain's InvalidRule becomes INVALID_ARGUMENT with every violation."""
    try:
        return validated(rule, limits, where)
    except InvalidRule as invalid:
        raise InvalidArgument([FieldViolation(v.field, v.description) for v in invalid.violations]) from None


def definition_from_proto(rule: rules_pb2.Rule) -> RuleDefinition:
    return RuleDefinition(
        name=rule.name,
        description=rule.description,
        type=enum_name(rules_pb2.RuleType, rule.type, "RULE_TYPE_") if rule.type else "",
        active=rule.active,
        priority=rule.priority,
        event_types=list(rule.event_types),
        conditions=to_python(rule.conditions) if rule.HasField("conditions") else None,
        actions=[
            {
                "type": enum_name(rules_pb2.ActionType, a.type, "ACTION_TYPE_") if a.type else "",
                "params": to_python(a.params),
            }
            for a in rule.actions
        ],
        stop_processing=rule.stop_processing,
        triggered_by_rules=rule.triggered_by_rules,
        max_executions_per_minute=rule.max_executions_per_minute,
    )


# --- executions and traces ------------------------------------------------------------------


def action_to_proto(action: dict[str, Any]) -> rules_pb2.ActionResult:
    return rules_pb2.ActionResult(
        index=action["index"],
        type=enum_value(rules_pb2.ActionType, action["type"], "ACTION_TYPE_"),
        params=to_struct(action["params"]),
        status=enum_value(rules_pb2.ActionStatus, action["status"], "ACTION_STATUS_"),
        error=action.get("error", ""),
        attempts=action.get("attempts", 0),
        duration_ms=action.get("duration_ms", 0.0),
    )


def execution_to_proto(execution: ExecutionRecord) -> rules_pb2.Execution:
    return rules_pb2.Execution(
        execution_id=execution.execution_id,
        rule_id=execution.rule_id,
        rule_version=execution.rule_version,
        event_id=execution.event_id,
        event_type=execution.event_type,
        status=enum_value(rules_pb2.ExecutionStatus, execution.status, "EXECUTION_STATUS_"),
        actions=[action_to_proto(a) for a in execution.actions],
        start_time=timestamp(execution.start_time),
        finish_time=timestamp(execution.finish_time),
        causation=[rules_pb2.CausationLink(**link) for link in execution.causation],
        refused_reason=execution.refused_reason,
    )


def trace_to_proto(trace: ConditionTrace) -> rules_pb2.ConditionTrace:
    leaf = bool(trace.fact)
    return rules_pb2.ConditionTrace(
        operator=trace.operator,
        fact=trace.fact,
        expected=to_value(trace.expected) if leaf else None,
        actual=to_value(trace.actual) if leaf else None,
        fact_present=trace.fact_present,
        passed=trace.passed,
        children=[trace_to_proto(c) for c in trace.children],
        error=trace.error,
        outputs=to_value(trace.outputs) if trace.outputs is not None else None,
        row=trace.row,
        selected=trace.selected,
    )


def outcome_to_proto(outcome: RuleOutcome) -> rules_pb2.RuleTrace:
    rule = outcome.rule
    return rules_pb2.RuleTrace(
        rule_id=rule.rule_id,
        rule_name=rule.name,
        rule_version=rule.version,
        priority=rule.priority,
        matched=outcome.matched,
        skipped_reason=outcome.skipped_reason,
        conditions=trace_to_proto(outcome.trace) if outcome.trace else None,
        actions=[planned_to_proto(a) for a in outcome.actions],
    )


def planned_to_proto(action: PlannedAction) -> rules_pb2.ActionResult:
    """An action as it would run: rendered parameters, pending (or failed when it cannot render)."""
    return rules_pb2.ActionResult(
        index=action.index,
        type=enum_value(rules_pb2.ActionType, action.type, "ACTION_TYPE_"),
        params=to_struct(action.params),
        status=rules_pb2.ACTION_STATUS_FAILED if action.error else rules_pb2.ACTION_STATUS_PENDING,
        error=action.error,
    )


def replay_item_to_proto(item: ReplayItem) -> rules_pb2.ReplayResult:
    event, live = item.replayed.event, item.replayed.live
    return rules_pb2.ReplayResult(
        event_id=event.event_id,
        event_type=event.type,
        occurred_time=timestamp(event.occurred_time),
        would_match=item.would is not None,
        actions=[planned_to_proto(a) for a in item.would or ()],
        live_execution_id=live.execution_id if live else "",
        # The same as `actions` when the diff is SAME: not sent twice.
        live_actions=[action_to_proto(a) for a in live.actions] if live and item.diff != SAME else [],
        diff=enum_value(rules_pb2.ReplayDiff, item.diff, "REPLAY_DIFF_"),
    )


def replay_summary_to_proto(tally: ReplayTally, seconds: float) -> rules_pb2.ReplaySummary:
    return rules_pb2.ReplaySummary(
        events_scanned=tally.events_scanned,
        would_fire=tally.would_fire,
        live_fired=tally.live_fired,
        duration_seconds=seconds,
        **tally.counts,
    )


def notification_to_proto(notification: NotificationRecord) -> rules_pb2.Notification:
    return rules_pb2.Notification(
        notification_id=notification.notification_id,
        execution_id=notification.execution_id,
        rule_id=notification.rule_id,
        event_id=notification.event_id,
        recipient=notification.recipient,
        subject=notification.subject,
        body=notification.body,
        status=enum_value(rules_pb2.NotificationStatus, notification.status, "NOTIFICATION_STATUS_"),
        attempts=notification.attempts,
        error=notification.error,
        create_time=timestamp(notification.create_time),
        sent_time=timestamp(notification.sent_time),
        channel=notification.channel,
        recipient_user=notification.recipient_user,
        recipient_role=notification.recipient_role,
        read_time=timestamp(notification.read_time),
    )


def _holds_nul(value: Any) -> bool:
    """Events are stored as JSONB, which cannot hold a NUL character in any key or string."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(_holds_nul(item) for item in value)


def event_record(event: event_pb2.Event, where: str, violations: Violations) -> StoredEvent:
    """The stored form of an event; problems go to `violations`."""
    violations.check(bool(event.event_id), f"{where}.event_id", "required")
    violations.check(
        len(event.event_id) <= MAX_EVENT_ID_LENGTH and event.event_id.isprintable(),
        f"{where}.event_id",
        f"at most {MAX_EVENT_ID_LENGTH} printable characters",
    )
    violations.check(bool(event.type), f"{where}.type", "required, e.g. 'batch.confirmed'")
    data = to_python(event.data)
    violations.check(not _holds_nul(data), f"{where}.data", "must not contain NUL characters")
    occurred = event.occurred_time.ToDatetime(tzinfo=UTC) if event.HasField("occurred_time") else datetime.now(UTC)
    return StoredEvent(
        event_id=event.event_id,
        type=event.type,
        source=event.source,
        occurred_time=occurred,
        data=data,
        trace_parent=event.trace_parent,
    )


def event_to_proto(event: StoredEvent) -> event_pb2.Event:
    return event_pb2.Event(
        event_id=event.event_id,
        type=event.type,
        source=event.source,
        occurred_time=timestamp(event.occurred_time),
        data=to_struct(event.data),
        trace_parent=event.trace_parent,
    )


def wait_to_proto(wait: WaitRecord) -> rules_pb2.Wait:
    return rules_pb2.Wait(
        wait_id=wait.wait_id,
        execution_id=wait.execution_id,
        action_index=wait.action_index,
        rule_id=wait.rule_id,
        rule_version=wait.rule_version,
        event_id=wait.event_id,
        conditions=to_value(wait.conditions),
        due_time=timestamp(wait.due_time),
        status=enum_value(rules_pb2.WaitStatus, wait.status, "WAIT_STATUS_"),
        create_time=timestamp(wait.create_time),
        finish_time=timestamp(wait.finish_time),
    )


def change_to_proto(change: Change) -> rules_pb2.RuleChange:
    return rules_pb2.RuleChange(
        path=change.path,
        kind=enum_value(rules_pb2.ChangeKind, change.kind, "CHANGE_KIND_"),
        before=to_value(change.before) if change.kind != "added" else None,
        after=to_value(change.after) if change.kind != "removed" else None,
    )
