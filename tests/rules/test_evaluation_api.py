"""Events in, executions out: dry-run traces, exactly-once per (rule, event), actions, retries, facts."""

import asyncio
import uuid

import grpc
from google.protobuf import json_format, timestamp_pb2
from loom.batch.v1 import batch_pb2
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, SERVICE, action, create, event, rule_message
from tests.rules.peers import eventually

CONFIRMED = {
    "batch": {"id": "b-1", "status": "confirmed", "fill_percentage": 80.0, "category": "t_shirts", "target_quantity": 100}
}
CONFIRM_ORDER = action("update_status", entity="order", id="{{order.id}}", status="confirmed")


async def executions_of(rules, event_id: str, *, finished: bool = True) -> list[rules_pb2.Execution]:
    listed = (await rules.ListExecutions(rules_pb2.ListExecutionsRequest(event_id=event_id), metadata=ADMIN)).executions
    if finished and any(e.status == rules_pb2.EXECUTION_STATUS_RUNNING for e in listed):
        return []
    return list(listed)


async def test_a_dry_run_traces_every_leaf_and_executes_nothing(rules, peers):
    matching = await create(
        rules,
        rule_message(
            "fills", conditions={"batch_fill_percentage": ">= 75", "batch_status": "confirmed"}, actions=[CONFIRM_ORDER]
        ),
    )
    missing = await create(rules, rule_message("needs order", conditions={"order_quantity": "> 10"}, actions=[CONFIRM_ORDER]))
    sample = event(**CONFIRMED)
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample, dry_run=True), metadata=ADMIN)
    traces = {t.rule_id: t for t in reply.rules}
    assert traces[matching.rule_id].matched and not traces[missing.rule_id].matched
    fill, _status = traces[matching.rule_id].conditions.children  # compact leaves sorted by key
    assert (fill.fact, fill.actual.number_value, fill.passed) == ("batch.fill_percentage", 80.0, True)
    absent = traces[missing.rule_id].conditions.children[0]
    assert (absent.fact_present, absent.passed) == (False, False)
    assert traces[matching.rule_id].actions[0].error == "{{order.id}} has no value for this event"
    assert list(reply.executions) == [] and peers.batch.calls == []
    assert await executions_of(rules, sample.event_id) == []


async def test_delivered_events_are_evaluated_once_even_when_redelivered(rules, peers):
    rule = await create(rules, rule_message(conditions={"order_status": "awaiting_supplier"}, actions=[CONFIRM_ORDER]))
    sample = event("order.status_changed", order={"id": "o-1", "status": "awaiting_supplier"})
    first = await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[sample, sample]), metadata=SERVICE)
    assert (first.accepted, first.duplicates) == (1, 1)
    (execution,) = await eventually(lambda: executions_of(rules, sample.event_id))
    again = await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[sample]), metadata=SERVICE)
    assert (again.accepted, again.duplicates) == (0, 1)
    assert execution.rule_id == rule.rule_id and execution.rule_version == 1
    assert execution.status == rules_pb2.EXECUTION_STATUS_SUCCESS
    assert json_format.MessageToDict(execution.actions[0].params) == {"entity": "order", "id": "o-1", "status": "confirmed"}
    (call,) = peers.batch.requests("UpdateOrderStatus")
    assert (call.order_id, call.status) == ("o-1", batch_pb2.ORDER_STATUS_CONFIRMED)


async def test_concurrent_redelivery_and_replays_run_a_rule_once(rules, peers):
    await create(rules, rule_message(actions=[CONFIRM_ORDER]))
    sample = event("order.placed", order={"id": "o-2", "status": "placed"})
    deliveries = [rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[sample]), metadata=SERVICE) for _ in range(10)]
    replays = [
        rules.ExecuteRules(rules_pb2.ExecuteRulesRequest(request_id=str(uuid.uuid4()), events=[sample]), metadata=ADMIN)
        for _ in range(5)
    ]
    answers = await asyncio.gather(*deliveries, *replays)
    assert sum(a.accepted for a in answers[:10]) <= 1
    assert sum(a.executions_created for a in answers[10:]) <= 1
    (execution,) = await eventually(lambda: executions_of(rules, sample.event_id))
    assert execution.status == rules_pb2.EXECUTION_STATUS_SUCCESS
    assert len({r.request_id for r in peers.batch.requests("UpdateOrderStatus")}) == 1


async def test_send_email_reaches_the_smtp_server_and_is_recorded(rules, smtp):
    await create(
        rules,
        rule_message(
            actions=[
                action(
                    "send_email",
                    recipient="ops@example.com",
                    subject="Batch {{batch.id}} confirmed",
                    body="At {{batch.fill_percentage}}%",
                )
            ]
        ),
    )
    sample = event(**CONFIRMED)
    (execution,) = (await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)).executions
    assert execution.status == rules_pb2.EXECUTION_STATUS_SUCCESS
    (message,) = smtp.sink.messages
    assert (
        message.rcpt_tos == ["ops@example.com"]
        and b"Subject: Batch b-1 confirmed" in message.content
        and b"At 80%" in message.content
    )
    (notification,) = (
        await rules.ListNotifications(rules_pb2.ListNotificationsRequest(rule_id=execution.rule_id), metadata=ADMIN)
    ).notifications
    assert (notification.status, notification.attempts, notification.event_id) == (
        rules_pb2.NOTIFICATION_STATUS_SENT,
        1,
        sample.event_id,
    )


async def test_transient_failures_are_retried_and_a_failed_action_does_not_stop_the_others(rules, peers):
    peers.batch.fail_next["UpdateOrderStatus"] = [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DEADLINE_EXCEEDED]
    peers.batch.fail_next["AssignSupplier"] = [grpc.StatusCode.FAILED_PRECONDITION]
    await create(
        rules,
        rule_message(
            type=rules_pb2.RULE_TYPE_AUTO_ASSIGNMENT,
            actions=[
                CONFIRM_ORDER,
                action("assign_supplier", entity="order", id="{{order.id}}", supplier_id="sup-1", priority=3),
                action("trigger_workflow", job="orchestrate-batches", params={"reason": "{{order.id}}"}),
            ],
        ),
    )
    sample = event("order.placed", order={"id": "o-3"})
    (execution,) = (await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)).executions
    retried, rejected, workflow = execution.actions
    assert (retried.status, retried.attempts) == (rules_pb2.ACTION_STATUS_SUCCEEDED, 3)
    assert (rejected.status, rejected.attempts) == (rules_pb2.ACTION_STATUS_FAILED, 1)
    assert rejected.error.startswith("FAILED_PRECONDITION")
    assert workflow.status == rules_pb2.ACTION_STATUS_SUCCEEDED
    assert execution.status == rules_pb2.EXECUTION_STATUS_PARTIAL
    (run,) = peers.scheduler.runs
    assert (run.job_name, dict(run.params)) == ("orchestrate-batches", {"reason": "o-3"})
    assert len({r.request_id for r in peers.batch.requests("UpdateOrderStatus")}) == 1
    fetched = await rules.GetExecution(rules_pb2.GetExecutionRequest(execution_id=execution.execution_id), metadata=ADMIN)
    assert fetched.execution == execution


async def test_an_unreachable_smtp_server_is_retried_then_recorded_as_failed(rules_service, rules):
    from tests.support import free_port, serve

    async with serve(
        "rules",
        rules_service.context.settings.database_url,
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        action_backoff_seconds=0.01,
        action_max_attempts=2,
        worker_poll_seconds=30,
    ) as lonely:
        from tests.support import stub_for

        async with stub_for("rules", lonely.target) as stub:
            await create(stub, rule_message(actions=[action("send_email", recipient="ops@example.com", subject="s", body="b")]))
            (execution,) = (
                await stub.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=event(**CONFIRMED)), metadata=ADMIN)
            ).executions
    (sent,) = execution.actions
    assert (sent.status, sent.attempts) == (rules_pb2.ACTION_STATUS_FAILED, 2)
    assert "SMTP unreachable" in sent.error and execution.status == rules_pb2.EXECUTION_STATUS_FAILED


async def test_facts_the_event_lacks_are_fetched_once_per_evaluation(rules, peers):
    assign = action("assign_supplier", entity="batch", id="{{batch.id}}", supplier_id="{{best_supplier_id}}")
    await create(rules, rule_message("a", conditions={"best_supplier_rating": {"min": 4}}, actions=[assign]))
    await create(rules, rule_message("b", conditions={"best_supplier_id": {"exists": True}}, actions=[assign]))
    sample = event(**CONFIRMED)
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)
    assert len(reply.executions) == 2 and peers.batch.fetches["RecommendSupplier"] == 1
    assert {r.supplier_id for r in peers.batch.requests("AssignSupplier")} == {"sup-best"}
    assert reply.fetched_facts["best_supplier_id"] == "sup-best"


async def test_an_event_waits_while_a_needed_fact_is_unreachable(rules, peers):
    peers.batch.fail_next["GetBatch"] = [grpc.StatusCode.DEADLINE_EXCEEDED]
    await create(rules, rule_message(conditions={"batch_fill_percentage": "> 75"}, actions=[CONFIRM_ORDER]))
    sample = event("order.placed", order={"id": "o-4", "batch_id": "b-9"})
    await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[sample]), metadata=SERVICE)
    (execution,) = await eventually(lambda: executions_of(rules, sample.event_id))
    assert execution.status == rules_pb2.EXECUTION_STATUS_SUCCESS and peers.batch.fetches["GetBatch"] == 2


async def test_stop_processing_skips_lower_priority_rules(rules):
    high = await create(rules, rule_message("high", priority=10, stop_processing=True, actions=[CONFIRM_ORDER]))
    await create(rules, rule_message("low", priority=1, actions=[CONFIRM_ORDER]))
    reply = await rules.EvaluateEvent(
        rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"id": "o-5"})), metadata=ADMIN
    )
    assert [e.rule_id for e in reply.executions] == [high.rule_id]
    assert reply.rules[1].skipped_reason.startswith("stopped by rule 'high'")


async def test_toggling_a_rule_applies_to_the_next_event(rules):
    rule = await create(rules, rule_message(actions=[CONFIRM_ORDER]))
    await rules.SetRuleActive(
        rules_pb2.SetRuleActiveRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id, active=False), metadata=ADMIN
    )
    off = await rules.EvaluateEvent(
        rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"id": "o-6"})), metadata=ADMIN
    )
    assert list(off.executions) == []
    await rules.SetRuleActive(
        rules_pb2.SetRuleActiveRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id, active=True), metadata=ADMIN
    )
    on = await rules.EvaluateEvent(
        rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"id": "o-7"})), metadata=ADMIN
    )
    assert [e.rule_version for e in on.executions] == [3]


async def evaluated(database_url: str, event_id: str) -> bool:
    from libs.db import make_engine
    from services.rules import store

    engine = make_engine(database_url, application_name="rules-test")
    try:
        async with engine.connect() as conn:
            row = await store.get_event(conn, event_id)
    finally:
        await engine.dispose()
    return bool(row and row.evaluated_time)


async def test_execute_rules_over_a_time_window_runs_only_what_has_not_run(rules, database_url):
    sample = event("order.placed", order={"id": "o-8"})
    sample.occurred_time.FromSeconds(1_000_000)
    await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[sample]), metadata=SERVICE)
    await eventually(lambda: evaluated(database_url, sample.event_id))  # by the worker, before the rule existed
    rule = await create(rules, rule_message(actions=[CONFIRM_ORDER]))
    request = rules_pb2.ExecuteRulesRequest(
        request_id=str(uuid.uuid4()),
        start_time=timestamp_pb2.Timestamp(seconds=999_999),
        end_time=timestamp_pb2.Timestamp(seconds=1_000_001),
    )
    first = await rules.ExecuteRules(request, metadata=ADMIN)
    assert (first.events_evaluated, first.executions_created, first.executions[0].rule_id) == (1, 1, rule.rule_id)
    assert await rules.ExecuteRules(request, metadata=ADMIN) == first
    second = await rules.ExecuteRules(
        request.__class__(request_id=str(uuid.uuid4()), start_time=request.start_time, end_time=request.end_time), metadata=ADMIN
    )
    assert (second.executions_created, second.executions_already_done) == (0, 1)


async def test_bad_events_are_rejected_and_nothing_is_stored(rules):
    good, bad = event("order.placed"), event("")
    bad.event_id = ""
    try:
        await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[good, bad]), metadata=SERVICE)
    except grpc.aio.AioRpcError as error:
        from libs.errors import field_violations

        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"events[1].event_id", "events[1].type"}
    else:
        raise AssertionError("accepted a bad event")
    accepted = await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[good]), metadata=SERVICE)
    assert accepted.accepted == 1


async def test_only_services_deliver_events(rules):
    from tests.support import auth

    try:
        await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[event()]), metadata=auth("buyer"))
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    else:
        raise AssertionError("a buyer delivered events")
