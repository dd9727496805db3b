"""The RulesService servicer: proto <-> domain and store, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loom.rules.v1 import rules_pb2, rules_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import audit, idempotency, pagination
from libs.auth import current_caller
from libs.clients import ServiceClients
from libs.db import run_in_transaction
from libs.errors import InvalidArgument, Violations
from libs.retention import retention_days
from services.rules import inbox, store
from services.rules.catalog import get_vocabulary
from services.rules.convert import (
    UPDATABLE,
    change_to_proto,
    checked,
    definition_from_proto,
    enum_name,
    event_record,
    event_to_proto,
    execution_to_proto,
    notification_to_proto,
    outcome_to_proto,
    replay_item_to_proto,
    replay_summary_to_proto,
    rule_to_proto,
    to_struct,
    wait_to_proto,
)
from services.rules.domain.diff import diff
from services.rules.domain.rules import RuleDefinition, table_warnings
from services.rules.evaluator import Processed, RuleEvaluator, Worker
from services.rules.records import StoredEvent
from services.rules.replay import Replayer, ReplayWindow
from services.rules.settings import RulesSettings
from services.rules.waits import cancel_wait

DEFAULT_REPLAY_DAYS = 7
# The rule_id a dry-run draft without one answers under.
DRAFT_RULE_ID = "draft"
# Results per streamed message: small enough for SSE clients to show progress, large enough to batch.
REPLAY_MESSAGE_RESULTS = 500


class RulesServicer(audit.AuditTrail, rules_pb2_grpc.RulesServiceServicer):
    def __init__(
        self, engine: AsyncEngine, evaluator: RuleEvaluator, worker: Worker, settings: RulesSettings, clients: ServiceClients
    ) -> None:
        self._db, self._evaluator, self._worker, self._settings = engine, evaluator, worker, settings
        self._clients = clients
        self._replayer = Replayer(engine, evaluator)

    async def _idempotent(self, method: str, request, response_type, work):
        return await idempotency.run_idempotent(self._db, store.idempotency_keys, method, request, response_type, work)

    # --- rule CRUD ---------------------------------------------------------------------

    async def CreateRule(self, request, context):
        definition = checked(definition_from_proto(request.rule), self._evaluator.limits)
        actor = current_caller().subject

        warnings = table_warnings(definition, self._evaluator.limits)

        async def work(conn):
            row = await store.create_rule(conn, definition.as_dict(), actor)
            return rules_pb2.CreateRuleResponse(rule=rule_to_proto(row), warnings=warnings)

        return await self._idempotent("CreateRule", request, rules_pb2.CreateRuleResponse, work)

    async def GetRule(self, request, context):
        row = await run_in_transaction(self._db, lambda conn: store.get_rule(conn, request.rule_id))
        return rules_pb2.GetRuleResponse(rule=rule_to_proto(row))

    async def ListRules(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"rules:{request.type}:{request.active}"
        after = pagination.decode_token(request.page_token, scope=scope)
        active = {rules_pb2.ACTIVE_FILTER_ACTIVE: True, rules_pb2.ACTIVE_FILTER_INACTIVE: False}.get(request.active)
        rule_type = enum_name(rules_pb2.RuleType, request.type, "RULE_TYPE_") if request.type else None
        rows = await run_in_transaction(
            self._db, lambda conn: store.list_rules(conn, rule_type=rule_type, active=active, limit=limit + 1, after=after)
        )
        token = (
            pagination.encode_token([rows[limit - 1].priority, rows[limit - 1].rule_id], scope=scope)
            if len(rows) > limit
            else ""
        )
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
            merged = {**current.definition().as_dict(), **{k: given[k] for k in paths}}
            definition = checked(RuleDefinition(**merged), self._evaluator.limits)
            changes = {k: definition.as_dict()[k] for k in paths}
            row = await store.change_rule(conn, request.rule.rule_id, changes, actor)
            warnings = table_warnings(definition, self._evaluator.limits)
            return rules_pb2.UpdateRuleResponse(rule=rule_to_proto(row), warnings=warnings)

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
            if current.active == request.active:
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
        token = pagination.encode_token([rows[limit - 1].version], scope=scope) if len(rows) > limit else ""
        return rules_pb2.ListRuleVersionsResponse(versions=[rule_to_proto(r) for r in rows[:limit]], next_page_token=token)

    async def DiffRuleVersions(self, request, context):
        async def versions(conn):
            current = (await store.get_rule(conn, request.rule_id)).version
            numbers = [v or current for v in (request.from_version, request.to_version)]
            for field, given in (("from_version", request.from_version), ("to_version", request.to_version)):
                if given < 0:
                    raise InvalidArgument.field(field, "0 (the current version) or a version number")
            return numbers, [await self._stored_definition(conn, request.rule_id, v) for v in numbers]

        (low, high), (before, after) = await run_in_transaction(self._db, versions)
        return rules_pb2.DiffRuleVersionsResponse(
            from_version=low, to_version=high, changes=[change_to_proto(c) for c in diff(before.as_dict(), after.as_dict())]
        )

    async def RollbackRule(self, request, context):
        actor = current_caller().subject
        if request.version <= 0:
            raise InvalidArgument.field("version", "the version number to roll back to")

        async def work(conn):
            await store.get_rule(conn, request.rule_id, for_update=True)
            old = checked(await self._stored_definition(conn, request.rule_id, request.version), self._evaluator.limits)
            row = await store.change_rule(conn, request.rule_id, old.as_dict(), actor)
            return rules_pb2.RollbackRuleResponse(rule=rule_to_proto(row))

        return await self._idempotent("RollbackRule", request, rules_pb2.RollbackRuleResponse, work)

    # --- events ------------------------------------------------------------------------

    async def DeliverEvents(self, request, context):
        violations = Violations()
        records = [event_record(e, f"events[{i}]", violations) for i, e in enumerate(request.events)]
        violations.raise_if_any()
        unique = list({r.event_id: r for r in records}.values())
        accepted = len(await run_in_transaction(self._db, audit.with_record(lambda conn: store.insert_events(conn, unique))))
        if accepted:
            self._worker.wake()
        return rules_pb2.DeliverEventsResponse(accepted=accepted, duplicates=len(records) - accepted)

    async def EvaluateEvent(self, request, context):
        violations = Violations()
        record = event_record(request.event, "event", violations)
        violations.check(request.dry_run or not request.HasField("draft"), "draft", "only with dry_run")
        violations.raise_if_any()
        draft = None
        if request.HasField("draft"):
            definition = checked(definition_from_proto(request.draft), self._evaluator.limits, where="draft")
            draft = self._evaluator.compile(request.draft.rule_id or DRAFT_RULE_ID, definition, version=request.draft.version)
        if request.dry_run:
            evaluation = await self._evaluator.evaluate(record, traced=True, draft=draft)
            return rules_pb2.EvaluateEventResponse(
                rules=[outcome_to_proto(o) for o in evaluation.outcomes], fetched_facts=to_struct(evaluation.fetched)
            )
        (processed,) = await self._run_now([record], traced=True)
        return rules_pb2.EvaluateEventResponse(
            rules=[outcome_to_proto(o) for o in processed.evaluation.outcomes],
            executions=[execution_to_proto(e) for e in processed.executions],
            fetched_facts=to_struct(processed.evaluation.fetched),
        )

    async def ListEvents(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"events:{request.event_type}"
        after = pagination.decode_token(request.page_token, scope=scope)
        found = await run_in_transaction(
            self._db,
            lambda conn: store.recent_events(
                conn, event_type=request.event_type, limit=limit + 1, before_seq=after[0] if after else None
            ),
        )
        token = pagination.encode_token([found[limit - 1].seq], scope=scope) if len(found) > limit else ""
        return rules_pb2.ListEventsResponse(events=[event_to_proto(e) for e in found[:limit]], next_page_token=token)

    async def GetVocabulary(self, request, context):
        return await get_vocabulary(self._clients)

    async def _run_now(self, records: list[StoredEvent], *, traced: bool = False) -> list[Processed]:
        """Stores the events (when new) and processes each now; a (rule, event) that already ran is not run again."""
        lease, leases = self._settings.event_lease_seconds, self._evaluator.leases
        new = await run_in_transaction(
            self._db,
            audit.with_record(lambda conn: store.insert_events(conn, records, lease_seconds=lease, owner=leases.owner)),
        )
        async with leases.holding("events", new):
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

    async def ReplayRule(self, request, context):
        rule_id, window = request.rule_id, self._replay_window(request)
        if request.HasField("draft"):
            definition = checked(definition_from_proto(request.draft), self._evaluator.limits, where="draft")
        else:
            if not rule_id:
                raise InvalidArgument.field("rule_id", "required unless a draft is given")
            definition = await run_in_transaction(self._db, lambda conn: self._stored_definition(conn, rule_id, request.version))
        rule = self._evaluator.compile(rule_id or "draft", definition, version=request.version)
        # Headers first: a client (the gateway's SSE) is committed to a stream before the first chunk.
        await context.send_initial_metadata(())
        last = None
        async for items, tally, seconds in self._replayer.replay(rule, rule_id, window):
            last = tally, seconds
            for start in range(0, len(items), REPLAY_MESSAGE_RESULTS):
                chunk = items[start : start + REPLAY_MESSAGE_RESULTS]
                yield rules_pb2.ReplayRuleResponse(results=[replay_item_to_proto(i) for i in chunk])
        assert last is not None  # replay() yields at least once
        yield rules_pb2.ReplayRuleResponse(summary=replay_summary_to_proto(*last))

    @staticmethod
    def _replay_window(request: rules_pb2.ReplayRuleRequest) -> ReplayWindow:
        end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else datetime.now(UTC)
        start = (
            request.start_time.ToDatetime(tzinfo=UTC)
            if request.HasField("start_time")
            else end - timedelta(days=DEFAULT_REPLAY_DAYS)
        )
        if start >= end:
            raise InvalidArgument.field("end_time", "must be after start_time")
        return ReplayWindow(
            start, end, current_facts=request.facts == rules_pb2.REPLAY_FACTS_CURRENT, only_differences=request.only_differences
        )

    @staticmethod
    async def _stored_definition(conn, rule_id: str, version: int) -> RuleDefinition:
        if version < 0:
            raise InvalidArgument.field("version", "0 (the current version) or a version number")
        return await store.get_version(conn, rule_id, version) if version else (await store.get_rule(conn, rule_id)).definition()

    # --- executions and notifications ------------------------------------------------------

    async def ListExecutions(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"executions:{request.rule_id}:{request.event_id}:{request.status}"
        after = pagination.decode_token(request.page_token, scope=scope)
        status = enum_name(rules_pb2.ExecutionStatus, request.status, "EXECUTION_STATUS_") if request.status else None
        rows = await run_in_transaction(
            self._db,
            lambda conn: store.list_executions(
                conn, rule_id=request.rule_id, event_id=request.event_id, status=status, limit=limit + 1, after=after
            ),
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = pagination.encode_token([last.start_time.isoformat(), last.execution_id], scope=scope)
        return rules_pb2.ListExecutionsResponse(executions=[execution_to_proto(r) for r in rows[:limit]], next_page_token=token)

    async def GetExecution(self, request, context):
        row = await run_in_transaction(self._db, lambda conn: store.get_execution(conn, request.execution_id))
        return rules_pb2.GetExecutionResponse(execution=execution_to_proto(row))

    async def ListNotifications(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"notifications:{request.status}:{request.rule_id}"
        after = pagination.decode_token(request.page_token, scope=scope)
        status = enum_name(rules_pb2.NotificationStatus, request.status, "NOTIFICATION_STATUS_") if request.status else None
        rows = await run_in_transaction(
            self._db,
            lambda conn: store.list_notifications(conn, status=status, rule_id=request.rule_id, limit=limit + 1, after=after),
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = pagination.encode_token([last.create_time.isoformat(), last.notification_id], scope=scope)
        return rules_pb2.ListNotificationsResponse(
            notifications=[notification_to_proto(r) for r in rows[:limit]], next_page_token=token
        )

    async def GetNotification(self, request, context):
        row = await run_in_transaction(self._db, lambda conn: store.get_notification(conn, request.notification_id))
        return rules_pb2.GetNotificationResponse(notification=notification_to_proto(row))

    async def ListWaits(self, request, context):
        limit = pagination.page_size(request.page_size)
        scope = f"waits:{request.rule_id}:{request.status}"
        after = pagination.decode_token(request.page_token, scope=scope)
        status = enum_name(rules_pb2.WaitStatus, request.status, "WAIT_STATUS_") if request.status else None
        rows = await run_in_transaction(
            self._db, lambda conn: store.list_waits(conn, rule_id=request.rule_id, status=status, limit=limit + 1, after=after)
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = pagination.encode_token([last.create_time.isoformat(), last.wait_id], scope=scope)
        return rules_pb2.ListWaitsResponse(waits=[wait_to_proto(r) for r in rows[:limit]], next_page_token=token)

    async def CancelWait(self, request, context):
        async def work(conn):
            return rules_pb2.CancelWaitResponse(wait=wait_to_proto(await cancel_wait(conn, request.wait_id)))

        return await self._idempotent("CancelWait", request, rules_pb2.CancelWaitResponse, work)

    # --- the caller's inbox -------------------------------------------------------------------

    async def ListInboxNotifications(self, request, context):
        user, role = inbox.reader(current_caller())
        limit = pagination.page_size(request.page_size)
        scope = f"inbox:{user}:{request.unread_only}"
        after = pagination.decode_token(request.page_token, scope=scope)

        async def read(conn):
            rows = await store.inbox(conn, user=user, role=role, unread_only=request.unread_only, limit=limit + 1, after=after)
            return rows, await store.unread_count(conn, user=user, role=role)

        rows, unread = await run_in_transaction(self._db, read)
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = pagination.encode_token([last.create_time.isoformat(), last.notification_id], scope=scope)
        return rules_pb2.ListInboxNotificationsResponse(
            notifications=[notification_to_proto(r) for r in rows[:limit]], next_page_token=token, unread_count=unread
        )

    async def WatchNotifications(self, request, context):
        caller = current_caller()
        # Headers first: a client (the gateway's SSE) knows the stream is open before anything arrives.
        await context.send_initial_metadata(())
        async for row, unread in inbox.watch(self._db, caller, self._settings.notification_poll_seconds):
            yield rules_pb2.WatchNotificationsResponse(
                notification=notification_to_proto(row) if row else None, unread_count=unread
            )

    async def MarkNotificationRead(self, request, context):
        user, role = inbox.reader(current_caller())

        async def work(conn):
            await store.mark_read(conn, user=user, role=role, notification_id=request.notification_id)
            row = await store.get_inbox_notification(conn, user=user, role=role, notification_id=request.notification_id)
            return rules_pb2.MarkNotificationReadResponse(
                notification=notification_to_proto(row), unread_count=await store.unread_count(conn, user=user, role=role)
            )

        return await self._idempotent("MarkNotificationRead", request, rules_pb2.MarkNotificationReadResponse, work)

    async def MarkAllNotificationsRead(self, request, context):
        user, role = inbox.reader(current_caller())

        async def work(conn):
            marked = await store.mark_read(conn, user=user, role=role, notification_id=None)
            return rules_pb2.MarkAllNotificationsReadResponse(
                marked=marked, unread_count=await store.unread_count(conn, user=user, role=role)
            )

        return await self._idempotent("MarkAllNotificationsRead", request, rules_pb2.MarkAllNotificationsReadResponse, work)

    async def PurgeOldData(self, request, context):
        days = retention_days(request.retention_days, self._settings.retention_days)

        async def work(conn):
            return rules_pb2.PurgeOldDataResponse(
                **await store.purge_older_than(conn, days),
                audit_events_deleted=await audit.purge(conn, self.audit_table, self._settings.audit_retention_days),
            )

        return await self._idempotent("PurgeOldData", request, rules_pb2.PurgeOldDataResponse, work)
