"""The RulesService servicer: proto <-> domain and store, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from loom.common.v1 import event_pb2
from loom.rules.v1 import rules_pb2, rules_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import idempotency, pagination
from libs.auth import current_caller
from libs.db import run_in_transaction
from libs.errors import InvalidArgument, Violations
from libs.retention import retention_days
from services.rules import store
from services.rules.domain.conditions import ConditionTrace
from services.rules.domain.evaluation import RuleOutcome
from services.rules.domain.rules import RuleDefinition, validated
from services.rules.evaluator import RuleEvaluator, Processed, Worker
from services.rules.settings import RulesSettings

UPDATABLE = ("name", "description", "type", "active", "priority", "event_types", "conditions", "actions", "stop_processing")
MAX_EVENT_ID_LENGTH = 128


def _enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def _enum_value(enum, name: str | None, prefix: str) -> int:
    return enum.Value(f"{prefix}{name.upper()}") if name else 0


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _value(python: Any) -> struct_pb2.Value:
    return json_format.ParseDict(python, struct_pb2.Value())


def _struct(python: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(python, struct_pb2.Struct())


def _python(message) -> Any:
    return json_format.MessageToDict(message)


# --- rules ------------------------------------------------------------------------------


def rule_to_proto(row: dict[str, Any]) -> rules_pb2.Rule:
    return rules_pb2.Rule(
        rule_id=str(row["rule_id"]),
        name=row["name"],
        description=row["description"],
        type=_enum_value(rules_pb2.RuleType, row["type"], "RULE_TYPE_"),
        active=row["active"],
        priority=row["priority"],
        event_types=row["event_types"],
        conditions=_value(row["conditions"]),
        actions=[
            rules_pb2.Action(type=_enum_value(rules_pb2.ActionType, a["type"], "ACTION_TYPE_"), params=_struct(a["params"]))
            for a in row["actions"]
        ],
        stop_processing=row["stop_processing"],
        version=row["version"],
        created_by=row["created_by"],
        updated_by=row["updated_by"],
        create_time=_timestamp(row["create_time"]),
        update_time=_timestamp(row["update_time"]),
        last_execution_status=_enum_value(rules_pb2.ExecutionStatus, row.get("last_execution_status"), "EXECUTION_STATUS_"),
        last_execution_time=_timestamp(row.get("last_execution_time")),
    )


def definition_from_proto(rule: rules_pb2.Rule) -> RuleDefinition:
    return RuleDefinition(
        name=rule.name,
        description=rule.description,
        type=_enum_name(rules_pb2.RuleType, rule.type, "RULE_TYPE_") if rule.type else "",
        active=rule.active,
        priority=rule.priority,
        event_types=list(rule.event_types),
        conditions=_python(rule.conditions) if rule.HasField("conditions") else None,
        actions=[
            {
                "type": _enum_name(rules_pb2.ActionType, a.type, "ACTION_TYPE_") if a.type else "",
                "params": _python(a.params),
            }
            for a in rule.actions
        ],
        stop_processing=rule.stop_processing,
    )


# --- executions and traces ------------------------------------------------------------------


def action_to_proto(action: dict[str, Any]) -> rules_pb2.ActionResult:
    return rules_pb2.ActionResult(
        index=action["index"],
        type=_enum_value(rules_pb2.ActionType, action["type"], "ACTION_TYPE_"),
        params=_struct(action["params"]),
        status=_enum_value(rules_pb2.ActionStatus, action["status"], "ACTION_STATUS_"),
        error=action.get("error", ""),
        attempts=action.get("attempts", 0),
        duration_ms=action.get("duration_ms", 0.0),
    )


def execution_to_proto(row: dict[str, Any]) -> rules_pb2.Execution:
    return rules_pb2.Execution(
        execution_id=str(row["execution_id"]),
        rule_id=str(row["rule_id"]),
        rule_version=row["rule_version"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=_enum_value(rules_pb2.ExecutionStatus, row["status"], "EXECUTION_STATUS_"),
        actions=[action_to_proto(a) for a in row["actions"]],
        start_time=_timestamp(row["start_time"]),
        finish_time=_timestamp(row["finish_time"]),
    )


def trace_to_proto(trace: ConditionTrace) -> rules_pb2.ConditionTrace:
    leaf = bool(trace.fact)
    return rules_pb2.ConditionTrace(
        operator=trace.operator,
        fact=trace.fact,
        expected=_value(trace.expected) if leaf else None,
        actual=_value(trace.actual) if leaf else None,
        fact_present=trace.fact_present,
        passed=trace.passed,
        children=[trace_to_proto(c) for c in trace.children],
        error=trace.error,
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
        actions=[
            rules_pb2.ActionResult(
                index=a.index,
                type=_enum_value(rules_pb2.ActionType, a.type, "ACTION_TYPE_"),
                params=_struct(a.params),
                status=rules_pb2.ACTION_STATUS_FAILED if a.error else rules_pb2.ACTION_STATUS_PENDING,
                error=a.error,
            )
            for a in outcome.actions
        ],
    )


def notification_to_proto(row: dict[str, Any]) -> rules_pb2.Notification:
    return rules_pb2.Notification(
        notification_id=str(row["notification_id"]),
        execution_id=str(row["execution_id"]),
        rule_id=str(row["rule_id"]),
        event_id=row["event_id"],
        recipient=row["recipient"],
        subject=row["subject"],
        body=row["body"],
        status=_enum_value(rules_pb2.NotificationStatus, row["status"], "NOTIFICATION_STATUS_"),
        attempts=row["attempts"],
        error=row["error"],
        create_time=_timestamp(row["create_time"]),
        sent_time=_timestamp(row["sent_time"]),
    )


def _holds_nul(value: Any) -> bool:
    """Events are stored as JSONB, which cannot hold a NUL character in any key or string."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    return isinstance(value, list) and any(_holds_nul(item) for item in value)


def event_record(event: event_pb2.Event, where: str, violations: Violations) -> dict[str, Any]:
    """The stored form of an event; problems go to `violations`."""
    violations.check(bool(event.event_id), f"{where}.event_id", "required")
    violations.check(
        len(event.event_id) <= MAX_EVENT_ID_LENGTH and event.event_id.isprintable(),
        f"{where}.event_id",
        f"at most {MAX_EVENT_ID_LENGTH} printable characters",
    )
    violations.check(bool(event.type), f"{where}.type", "required, e.g. 'batch.confirmed'")
    data = _python(event.data)
    violations.check(not _holds_nul(data), f"{where}.data", "must not contain NUL characters")
    occurred = event.occurred_time.ToDatetime(tzinfo=UTC) if event.HasField("occurred_time") else datetime.now(UTC)
    return {
        "event_id": event.event_id,
        "type": event.type,
        "source": event.source,
        "occurred_time": occurred,
        "data": data,
    }


class RulesServicer(rules_pb2_grpc.RulesServiceServicer):
    def __init__(self, engine: AsyncEngine, evaluator: RuleEvaluator, worker: Worker, settings: RulesSettings) -> None:
        self._db, self._evaluator, self._worker, self._settings = engine, evaluator, worker, settings

    async def _idempotent(self, method: str, request, response_type, work):
        return await idempotency.run_idempotent(self._db, store.idempotency_keys, method, request, response_type, work)

    # --- rule CRUD ---------------------------------------------------------------------

    async def CreateRule(self, request, context):
        definition = validated(definition_from_proto(request.rule), self._evaluator.limits)
        actor = current_caller().subject

        async def work(conn):
            return rules_pb2.CreateRuleResponse(rule=rule_to_proto(await store.create_rule(conn, definition.as_dict(), actor)))

        return await self._idempotent("CreateRule", request, rules_pb2.CreateRuleResponse, work)

    async def GetRule(self, request, context):
        row = await run_in_transaction(self._db, lambda conn: store.get_rule(conn, request.rule_id))
        return rules_pb2.GetRuleResponse(rule=rule_to_proto(row))

    async def ListRules(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"rules:{request.type}:{request.active}"
        after = pagination.decode_token(request.page_token, scope=scope)
        active = {rules_pb2.ACTIVE_FILTER_ACTIVE: True, rules_pb2.ACTIVE_FILTER_INACTIVE: False}.get(request.active)
        rule_type = _enum_name(rules_pb2.RuleType, request.type, "RULE_TYPE_") if request.type else None
        rows = await run_in_transaction(
            self._db, lambda conn: store.list_rules(conn, rule_type=rule_type, active=active, limit=limit + 1, after=after)
        )
        token = pagination.encode_token([rows[limit - 1]["priority"], str(rows[limit - 1]["rule_id"])], scope=scope) if len(rows) > limit else ""
        return rules_pb2.ListRulesResponse(rules=[rule_to_proto(r) for r in rows[:limit]], next_page_token=token)

    async def UpdateRule(self, request, context):
        paths = list(request.update_mask.paths) or list(UPDATABLE)
        unknown = [p for p in paths if p not in UPDATABLE]
        if unknown:
            raise InvalidArgument.field("update_mask", f"not updatable: {', '.join(unknown)}; updatable: {', '.join(UPDATABLE)}")
        given = definition_from_proto(request.rule).as_dict()
        actor = current_caller().subject

        async def work(conn):
            current = await store.get_rule(conn, request.rule.rule_id, for_update=True)
            merged = {**{k: current[k] for k in UPDATABLE}, **{k: given[k] for k in paths}}
            definition = validated(RuleDefinition(**merged), self._evaluator.limits).as_dict()
            row = await store.change_rule(conn, request.rule.rule_id, {k: definition[k] for k in paths}, actor)
            return rules_pb2.UpdateRuleResponse(rule=rule_to_proto(row))

        return await self._idempotent("UpdateRule", request, rules_pb2.UpdateRuleResponse, work)

    async def DeleteRule(self, request, context):
        actor = current_caller().subject

        async def work(conn):
            return rules_pb2.DeleteRuleResponse(rule=rule_to_proto(await store.delete_rule(conn, request.rule_id, actor)))

        return await self._idempotent("DeleteRule", request, rules_pb2.DeleteRuleResponse, work)

    async def SetRuleActive(self, request, context):
        actor = current_caller().subject

        async def work(conn):
            current = await store.get_rule(conn, request.rule_id, for_update=True)
            if current["active"] == request.active:
                return rules_pb2.SetRuleActiveResponse(rule=rule_to_proto(current))
            row = await store.change_rule(conn, request.rule_id, {"active": request.active}, actor)
            return rules_pb2.SetRuleActiveResponse(rule=rule_to_proto(row))

        return await self._idempotent("SetRuleActive", request, rules_pb2.SetRuleActiveResponse, work)

    async def ListRuleVersions(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"versions:{request.rule_id}"
        after = pagination.decode_token(request.page_token, scope=scope)
        rows = await run_in_transaction(
            self._db,
            lambda conn: store.list_versions(conn, request.rule_id, limit=limit + 1, before=after[0] if after else None),
        )
        token = pagination.encode_token([rows[limit - 1]["version"]], scope=scope) if len(rows) > limit else ""
        return rules_pb2.ListRuleVersionsResponse(versions=[rule_to_proto(r) for r in rows[:limit]], next_page_token=token)

    # --- events ------------------------------------------------------------------------

    async def DeliverEvents(self, request, context):
        violations = Violations()
        records = [event_record(e, f"events[{i}]", violations) for i, e in enumerate(request.events)]
        violations.raise_if_any()
        unique = list({r["event_id"]: r for r in records}.values())
        accepted = await run_in_transaction(self._db, lambda conn: store.insert_events(conn, unique))
        if accepted:
            self._worker.wake()
        return rules_pb2.DeliverEventsResponse(accepted=accepted, duplicates=len(records) - accepted)

    async def EvaluateEvent(self, request, context):
        violations = Violations()
        record = event_record(request.event, "event", violations)
        violations.raise_if_any()
        if request.dry_run:
            evaluation = await self._evaluator.evaluate(record, traced=True)
            return rules_pb2.EvaluateEventResponse(
                rules=[outcome_to_proto(o) for o in evaluation.outcomes], fetched_facts=_struct(evaluation.fetched)
            )
        (processed,) = await self._run_now([record], traced=True)
        return rules_pb2.EvaluateEventResponse(
            rules=[outcome_to_proto(o) for o in processed.evaluation.outcomes],
            executions=[execution_to_proto(e) for e in processed.executions],
            fetched_facts=_struct(processed.evaluation.fetched),
        )

    async def _run_now(self, records: list[dict[str, Any]], *, traced: bool = False) -> list[Processed]:
        """Stores the events (when new) and processes each now; a (rule, event) that already ran is not run again."""
        lease = self._settings.event_lease_seconds
        await run_in_transaction(self._db, lambda conn: store.insert_events(conn, records, lease_seconds=lease))
        return [await self._evaluator.process(record, traced=traced) for record in records]

    async def ExecuteRules(self, request, context):
        """Idempotent by request_id; the key is kept outside the run's transactions, which call other services."""
        idempotency.validate_request_id(request.request_id)
        violations = Violations()
        records = [event_record(e, f"events[{i}]", violations) for i, e in enumerate(request.events)]
        if not records:
            violations.check(request.HasField("start_time"), "start_time", "required when no events are given")
            violations.check(request.HasField("end_time"), "end_time", "required when no events are given")
            if request.HasField("start_time") and request.HasField("end_time"):
                violations.check(
                    request.start_time.ToDatetime() < request.end_time.ToDatetime(), "end_time", "must be after start_time"
                )
        violations.raise_if_any()
        stored = await run_in_transaction(
            self._db,
            lambda conn: idempotency.claim(conn, store.idempotency_keys, "ExecuteRules", request.request_id, request),
        )
        if stored is not None:
            return rules_pb2.ExecuteRulesResponse.FromString(stored)
        if not records:
            start, end = request.start_time.ToDatetime(tzinfo=UTC), request.end_time.ToDatetime(tzinfo=UTC)
            records = await run_in_transaction(self._db, lambda conn: store.events_between(conn, start, end))
        results = await self._run_now(records)
        response = rules_pb2.ExecuteRulesResponse(
            events_evaluated=len(records),
            executions_created=sum(len(p.executions) for p in results),
            executions_already_done=sum(p.already_done for p in results),
            executions=[execution_to_proto(e) for p in results for e in p.executions],
        )
        await run_in_transaction(
            self._db,
            lambda conn: idempotency.remember(conn, store.idempotency_keys, "ExecuteRules", request.request_id, response),
        )
        return response

    # --- executions and notifications ------------------------------------------------------

    async def ListExecutions(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"executions:{request.rule_id}:{request.event_id}:{request.status}"
        after = pagination.decode_token(request.page_token, scope=scope)
        status = _enum_name(rules_pb2.ExecutionStatus, request.status, "EXECUTION_STATUS_") if request.status else None
        rows = await run_in_transaction(
            self._db,
            lambda conn: store.list_executions(
                conn, rule_id=request.rule_id, event_id=request.event_id, status=status, limit=limit + 1, after=after
            ),
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = pagination.encode_token([last["start_time"].isoformat(), str(last["execution_id"])], scope=scope)
        return rules_pb2.ListExecutionsResponse(executions=[execution_to_proto(r) for r in rows[:limit]], next_page_token=token)

    async def GetExecution(self, request, context):
        row = await run_in_transaction(self._db, lambda conn: store.get_execution(conn, request.execution_id))
        return rules_pb2.GetExecutionResponse(execution=execution_to_proto(row))

    async def ListNotifications(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"notifications:{request.status}:{request.rule_id}"
        after = pagination.decode_token(request.page_token, scope=scope)
        status = _enum_name(rules_pb2.NotificationStatus, request.status, "NOTIFICATION_STATUS_") if request.status else None
        rows = await run_in_transaction(
            self._db,
            lambda conn: store.list_notifications(conn, status=status, rule_id=request.rule_id, limit=limit + 1, after=after),
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = pagination.encode_token([last["create_time"].isoformat(), str(last["notification_id"])], scope=scope)
        return rules_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(r) for r in rows[:limit]], next_page_token=token
        )

    async def GetNotification(self, request, context):
        row = await run_in_transaction(self._db, lambda conn: store.get_notification(conn, request.notification_id))
        return rules_pb2.GetNotificationResponse(notification=notification_to_proto(row))

    async def PurgeOldData(self, request, context):
        days = retention_days(request.retention_days, self._settings.retention_days)

        async def work(conn):
            return rules_pb2.PurgeOldDataResponse(**await store.purge_older_than(conn, days))

        return await self._idempotent("PurgeOldData", request, rules_pb2.PurgeOldDataResponse, work)
