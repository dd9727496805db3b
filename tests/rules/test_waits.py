"""Durable waits: pause, re-check, continue; conditions that no longer hold; cancel; the version kept."""

from __future__ import annotations

import uuid

import grpc
import pytest
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, action, create, event, rule_message, value
from tests.rules.peers import eventually

RUN_JOB = action("trigger_workflow", job="after-wait", params={"order": "{{order.id}}"})


async def the_execution(rules, event_id: str) -> rules_pb2.Execution:
    (execution,) = (await rules.ListExecutions(rules_pb2.ListExecutionsRequest(event_id=event_id), metadata=ADMIN)).executions
    return execution


async def waits_of(rules, rule_id: str) -> list[rules_pb2.Wait]:
    return list((await rules.ListWaits(rules_pb2.ListWaitsRequest(rule_id=rule_id), metadata=ADMIN)).waits)


async def test_a_wait_pauses_the_execution_then_continues_once_when_due(rules, peers):
    rule = await create(rules, rule_message(actions=[action("wait", seconds=0.5), RUN_JOB]))
    sample = event("order.placed", order={"id": "w-1"})
    (started,) = (await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)).executions
    assert started.status == rules_pb2.EXECUTION_STATUS_WAITING and peers.scheduler.runs == []
    assert [a.status for a in started.actions] == [rules_pb2.ACTION_STATUS_WAITING, rules_pb2.ACTION_STATUS_PENDING]
    (waiting,) = await waits_of(rules, rule.rule_id)
    assert waiting.status == rules_pb2.WAIT_STATUS_WAITING and waiting.rule_version == 1

    async def finished():
        execution = await the_execution(rules, sample.event_id)
        return execution if execution.status == rules_pb2.EXECUTION_STATUS_SUCCESS else None

    await eventually(finished)
    assert [run.job_name for run in peers.scheduler.runs] == ["after-wait"]
    (resumed,) = await waits_of(rules, rule.rule_id)
    assert resumed.status == rules_pb2.WAIT_STATUS_RESUMED


async def test_when_the_conditions_no_longer_hold_the_rest_is_skipped(rules, peers):
    # The batch stand-in reports the batch at 80%: "still under 75%" is re-checked with the fetched batch.
    wait = action("wait", seconds=0.3, conditions={"batch_fill_percentage": "< 75"})
    await create(rules, rule_message(actions=[wait, RUN_JOB]))
    sample = event("order.placed", order={"id": "w-2", "batch_id": "b-9"})
    await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)

    async def ended():
        execution = await the_execution(rules, sample.event_id)
        return execution if execution.status != rules_pb2.EXECUTION_STATUS_WAITING else None

    execution = await eventually(ended)
    assert execution.status == rules_pb2.EXECUTION_STATUS_PARTIAL
    assert execution.actions[1].status == rules_pb2.ACTION_STATUS_SKIPPED
    assert execution.actions[1].error == "the conditions no longer hold after the wait"
    assert peers.scheduler.runs == [] and peers.batch.fetches["GetBatch"] == 1


async def test_a_cancelled_wait_skips_the_rest_and_cannot_be_cancelled_twice(rules, peers):
    rule = await create(rules, rule_message(actions=[action("wait", seconds=600), RUN_JOB]))
    sample = event("order.placed", order={"id": "w-3"})
    await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)
    (waiting,) = await waits_of(rules, rule.rule_id)
    reply = await rules.CancelWait(
        rules_pb2.CancelWaitRequest(request_id=str(uuid.uuid4()), wait_id=waiting.wait_id), metadata=ADMIN
    )
    assert reply.wait.status == rules_pb2.WAIT_STATUS_CANCELLED
    execution = await the_execution(rules, sample.event_id)
    assert [a.status for a in execution.actions] == [rules_pb2.ACTION_STATUS_SKIPPED] * 2
    assert execution.status == rules_pb2.EXECUTION_STATUS_FAILED and execution.HasField("finish_time")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await rules.CancelWait(rules_pb2.CancelWaitRequest(request_id=str(uuid.uuid4()), wait_id=waiting.wait_id), metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert peers.scheduler.runs == []


async def test_a_wait_resumes_on_the_version_it_started_with(rules, peers):
    rule = await create(rules, rule_message(conditions={"order_quantity": "> 5"}, actions=[action("wait", seconds=0.5), RUN_JOB]))
    sample = event("order.placed", order={"id": "w-4", "quantity": 10})
    await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)
    rule.actions[1].params["job"] = "edited-job"
    rule.conditions.CopyFrom(value({"order_quantity": "> 50"}))
    await rules.UpdateRule(rules_pb2.UpdateRuleRequest(request_id=str(uuid.uuid4()), rule=rule), metadata=ADMIN)

    async def ran():
        return peers.scheduler.runs

    (run,) = await eventually(ran)
    assert run.job_name == "after-wait"  # version 1's action, re-checked against version 1's "> 5"


@pytest.mark.parametrize("seconds", [0, -1, "soon", 10**9])
async def test_a_wait_needs_a_sensible_number_of_seconds(rules, seconds):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(rules, rule_message(actions=[action("wait", seconds=seconds), RUN_JOB]))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "actions[0].params.seconds" in failure.value.details()
