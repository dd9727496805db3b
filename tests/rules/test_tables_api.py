"""Decision tables over the API: refused overlaps, gap warnings, row traces, outputs in executed actions."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import json_format
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, action, create, event, rule_message

RUN_JOB = action("trigger_workflow", job="discount", params={"order": "{{order.id}}", "percent": "{{decision.discount}}"})


def bands(*rows) -> dict:
    return {"table": {"hit_policy": "UNIQUE", "inputs": ["order.quantity"], "outputs": ["discount"], "rules": list(rows)}}


async def test_a_unique_table_with_overlapping_rows_is_refused(rules):
    overlapping = bands({"when": ["< 20"], "then": {"discount": 0}}, {"when": [">= 10"], "then": {"discount": 5}})
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(rules, rule_message(conditions=overlapping, actions=[RUN_JOB]))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "overlaps rules[0] under UNIQUE" in failure.value.details()


async def test_a_table_with_a_gap_is_saved_with_a_warning(rules):
    gappy = bands({"when": ["< 10"], "then": {"discount": 0}}, {"when": ["> 20"], "then": {"discount": 5}})
    reply = await rules.CreateRule(
        rules_pb2.CreateRuleRequest(request_id=str(uuid.uuid4()), rule=rule_message(conditions=gappy, actions=[RUN_JOB])),
        metadata=ADMIN,
    )
    assert reply.warnings[0] == "no table rule matches order.quantity=10: the rule does not fire there"


async def test_table_outputs_reach_the_executed_actions_and_the_dry_run_traces_each_row(rules, peers):
    complete = bands({"when": ["< 10"], "then": {"discount": 0}}, {"when": [">= 10"], "then": {"discount": 5}})
    rule = await create(rules, rule_message(conditions=complete, actions=[RUN_JOB]))
    sample = event("order.placed", order={"id": "o-t", "quantity": 12})
    dry = await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample, dry_run=True), metadata=ADMIN)
    (trace,) = [t for t in dry.rules if t.rule_id == rule.rule_id]
    assert trace.conditions.operator == "table:UNIQUE" and trace.conditions.outputs.struct_value["discount"] == 5
    assert [(r.row, r.passed, r.selected) for r in trace.conditions.children] == [(1, False, False), (2, True, True)]
    assert json_format.MessageToDict(trace.actions[0].params) == {"job": "discount", "params": {"order": "o-t", "percent": 5}}
    await rules.EvaluateEvent(rules_pb2.EvaluateEventRequest(event=sample), metadata=ADMIN)
    (run,) = peers.scheduler.runs
    assert json_format.MessageToDict(run.params) == {"order": "o-t", "percent": 5}
