"""Loop and runaway guards: the causation chain, the depth limit, opt-in, the rate limit, the circuit breaker."""

from __future__ import annotations

import json
import uuid

import grpc
from google.protobuf import json_format
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, SERVICE, action, create, event, rule_message
from tests.rules.peers import eventually

CONFIRM_ORDER = action("update_status", entity="order", id="{{order.id}}", status="confirmed")


async def executions_of_rule(rules, rule_id: str) -> list[rules_pb2.Execution]:
    reply = await rules.ListExecutions(rules_pb2.ListExecutionsRequest(rule_id=rule_id, page_size=100), metadata=ADMIN)
    return list(reply.executions)


async def test_a_self_triggering_rule_stops_at_the_depth_limit_with_the_chain_recorded(rules, peers):
    """The batch service stand-in emits order.status_changed for each update, carrying the chain it was sent."""

    async def emit(request, context):
        chain = json.loads(dict(context.invocation_metadata())["loom-causation"])
        caused = event("order.status_changed", order={"id": request.order_id, "status": "confirmed"}, causation=chain)
        await rules.DeliverEvents(rules_pb2.DeliverEventsRequest(events=[caused]), metadata=SERVICE)

    peers.batch.on_update = emit
    rule = await create(
        rules,
        rule_message(event_types=["order.placed", "order.status_changed"], actions=[CONFIRM_ORDER], triggered_by_rules=True),
    )
    await rules.DeliverEvents(
        rules_pb2.DeliverEventsRequest(events=[event("order.placed", order={"id": "loop-1"})]), metadata=SERVICE
    )

    async def refused():
        return [e for e in await executions_of_rule(rules, rule.rule_id) if e.status == rules_pb2.EXECUTION_STATUS_REFUSED]

    (stopped,) = await eventually(refused)
    assert len(peers.batch.requests("UpdateOrderStatus")) == 3  # the default depth limit
    assert [link.rule_id for link in stopped.causation] == [rule.rule_id] * 3
    assert stopped.refused_reason.startswith("loop guard: the rule already ran 3 times")
    assert {a.status for a in stopped.actions} == {rules_pb2.ACTION_STATUS_SKIPPED}
    runs = [e for e in await executions_of_rule(rules, rule.rule_id) if e.status == rules_pb2.EXECUTION_STATUS_SUCCESS]
    assert sorted(len(e.causation) for e in runs) == [0, 1, 2]
    assert {link.execution_id for link in stopped.causation} == {e.execution_id for e in runs}


async def test_a_rule_ignores_events_caused_by_rules_unless_it_opts_in(rules):
    plain = await create(rules, rule_message("plain", actions=[CONFIRM_ORDER]))
    opted = await create(rules, rule_message("opted", actions=[CONFIRM_ORDER], triggered_by_rules=True))
    caused = event(
        "order.status_changed",
        order={"id": "o-c"},
        causation=[{"rule_id": str(uuid.uuid4()), "execution_id": "x", "event_id": "e"}],
    )
    reply = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=caused), metadata=ADMIN)
    assert {e.rule_id for e in reply.executions} == {opted.rule_id}
    (skipped,) = [t for t in reply.rules if t.rule_id == plain.rule_id]
    assert skipped.skipped_reason == "caused by a rule's action; the rule does not opt in"


async def test_executions_beyond_the_rate_limit_are_refused(rules, peers):
    rule = await create(rules, rule_message(actions=[CONFIRM_ORDER], max_executions_per_minute=2))
    events = [event("order.placed", order={"id": f"rate-{i}"}) for i in range(3)]
    for sample in events:
        await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)
    statuses = sorted(e.status for e in await executions_of_rule(rules, rule.rule_id))
    assert statuses == [rules_pb2.EXECUTION_STATUS_SUCCESS] * 2 + [rules_pb2.EXECUTION_STATUS_REFUSED]
    assert len(peers.batch.requests("UpdateOrderStatus")) == 2


async def test_a_rule_that_keeps_failing_is_deactivated_and_says_why(rules, peers):
    rule = await create(rules, rule_message(actions=[CONFIRM_ORDER]))
    peers.batch.fail_next["UpdateOrderStatus"] = [grpc.StatusCode.FAILED_PRECONDITION] * 5
    for i in range(5):
        await rules.EvaluateEvent(
            rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"id": f"f-{i}"})), metadata=ADMIN
        )
    current = (await rules.GetRule(rules_pb2.GetRuleRequest(rule_id=rule.rule_id), metadata=ADMIN)).rule
    assert not current.active and current.deactivated_reason == "circuit breaker: the last 5 executions failed"
    assert current.updated_by == "system:circuit-breaker"
    again = await rules.SetRuleActive(
        rules_pb2.SetRuleActiveRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id, active=True), metadata=ADMIN
    )
    assert again.rule.active and again.rule.deactivated_reason == ""


async def test_four_failures_do_not_trip_the_breaker(rules, peers):
    rule = await create(rules, rule_message(actions=[CONFIRM_ORDER]))
    peers.batch.fail_next["UpdateOrderStatus"] = [grpc.StatusCode.FAILED_PRECONDITION] * 4
    for i in range(5):
        await rules.EvaluateEvent(
            rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"id": f"g-{i}"})), metadata=ADMIN
        )
    current = (await rules.GetRule(rules_pb2.GetRuleRequest(rule_id=rule.rule_id), metadata=ADMIN)).rule
    assert current.active and json_format.MessageToDict(current).get("deactivatedReason") is None
