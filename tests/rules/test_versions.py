"""Versions: a structured diff between any two, and rollback as a new version that behaves exactly as the old one."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import json_format
from loom.rules.v1 import rules_pb2

from tests.rules.conftest import ADMIN, action, create, event, rule_message, value


async def update(rules, rule: rules_pb2.Rule) -> rules_pb2.Rule:
    return (await rules.UpdateRule(rules_pb2.UpdateRuleRequest(request_id=str(uuid.uuid4()), rule=rule), metadata=ADMIN)).rule


async def diff(rules, rule_id: str, low: int, high: int) -> dict[str, tuple]:
    reply = await rules.DiffRuleVersions(
        rules_pb2.DiffRuleVersionsRequest(rule_id=rule_id, from_version=low, to_version=high), metadata=ADMIN
    )
    return {
        c.path: (
            rules_pb2.ChangeKind.Name(c.kind),
            json_format.MessageToDict(c.before) if c.HasField("before") else None,
            json_format.MessageToDict(c.after) if c.HasField("after") else None,
        )
        for c in reply.changes
    }


async def edited(rules) -> rules_pb2.Rule:
    rule = await create(rules, rule_message(conditions={"order_quantity": "> 10"}, actions=[action("trigger_workflow", job="a")]))
    rule.conditions.CopyFrom(value({"order_quantity": "> 50"}))
    rule.actions[0].params["job"] = "b"
    rule.actions.append(action("trigger_workflow", job="c"))
    rule.priority = 7
    return await update(rules, rule)


async def test_the_diff_names_each_changed_value_with_its_path(rules):
    rule = await edited(rules)
    assert await diff(rules, rule.rule_id, 1, 2) == {
        "conditions.all[0].value": ("CHANGE_KIND_CHANGED", 10.0, 50.0),
        "actions[0].params.job": ("CHANGE_KIND_CHANGED", "a", "b"),
        "actions[1]": ("CHANGE_KIND_ADDED", None, {"type": "trigger_workflow", "params": {"job": "c"}}),
        "priority": ("CHANGE_KIND_CHANGED", 0.0, 7.0),
    }
    assert await diff(rules, rule.rule_id, 2, 0) == {}  # 0: the current version


async def test_rollback_makes_a_new_version_that_behaves_as_the_old_one(rules, peers):
    rule = await edited(rules)
    rolled = (
        await rules.RollbackRule(
            rules_pb2.RollbackRuleRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id, version=1), metadata=ADMIN
        )
    ).rule
    assert rolled.version == 3
    assert await diff(rules, rule.rule_id, 1, 3) == {}
    reply = await rules.EvaluateEvent(
        rules_pb2.EvaluateEventRequest(event=event("order.placed", order={"quantity": 20})), metadata=ADMIN
    )
    (execution,) = [e for e in reply.executions if e.rule_id == rule.rule_id]
    assert execution.rule_version == 3
    assert [run.job_name for run in peers.scheduler.runs] == ["a"]  # v1: "> 10" fires at 20, one action, job a
    versions = (await rules.ListRuleVersions(rules_pb2.ListRuleVersionsRequest(rule_id=rule.rule_id), metadata=ADMIN)).versions
    assert [v.version for v in versions] == [3, 2, 1]


@pytest.mark.parametrize(("version", "code"), [(0, grpc.StatusCode.INVALID_ARGUMENT), (9, grpc.StatusCode.NOT_FOUND)])
async def test_rollback_needs_an_existing_version(rules, version, code):
    rule = await create(rules, rule_message(actions=[action("trigger_workflow", job="a")]))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await rules.RollbackRule(
            rules_pb2.RollbackRuleRequest(request_id=str(uuid.uuid4()), rule_id=rule.rule_id, version=version), metadata=ADMIN
        )
    assert failure.value.code() == code
