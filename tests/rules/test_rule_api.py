"""Rule CRUD over gRPC: normalised conditions, versions with audit, validation, soft delete, auth."""

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from loom.rules.v1 import rules_pb2

from libs.errors import field_violations
from tests.rules.conftest import ADMIN, action, create, rule_message, value
from tests.support import auth

EMAIL = action("send_email", recipient="ops@example.com", subject="Batch {{batch.id}}", body="filled")


async def test_create_normalises_the_compact_form_and_records_who(rules):
    created = await create(
        rules, rule_message(conditions={"batch_status": "confirmed", "completion_percentage": "> 75%"}, actions=[EMAIL])
    )
    assert json_format.MessageToDict(created.conditions) == {
        "all": [
            {"fact": "batch.status", "operator": "equal", "value": "confirmed"},
            {"fact": "batch.fill_percentage", "operator": "greater_than", "value": 75.0},
        ]
    }
    assert (created.version, created.created_by, created.updated_by) == (1, "admin:ada", "admin:ada")
    fetched = await rules.GetRule(rules_pb2.GetRuleRequest(rule_id=created.rule_id), metadata=ADMIN)
    assert fetched.rule == created


async def test_an_invalid_rule_is_rejected_with_field_violations_and_nothing_saved(rules):
    bad = rule_message(
        conditions={
            "all": [
                {"fact": "order.status", "operator": "resembles", "value": "x"},
                {"fact": "order.id", "operator": "matches", "value": "(("},
            ]
        },
        actions=[action("send_email", recipient="{{buyer.email}}", subject="s", body="b"), rules_pb2.Action()],
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await create(rules, bad)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error.value)) == {
        "rule.conditions.all[0].operator",
        "rule.conditions.all[1].value",
        "rule.actions[0].params.recipient",
        "rule.actions[1].type",
    }
    listed = await rules.ListRules(rules_pb2.ListRulesRequest(), metadata=ADMIN)
    assert list(listed.rules) == []


async def test_every_update_is_a_new_version_and_versions_keep_the_old_definition(rules):
    created = await create(rules, rule_message(conditions={"batch_status": "confirmed"}, actions=[EMAIL]))
    changed = created.__class__(rule_id=created.rule_id, priority=7, conditions=value({"batch_status": "cancelled"}))
    updated = (
        await rules.UpdateRule(
            rules_pb2.UpdateRuleRequest(
                request_id=str(uuid.uuid4()), rule=changed, update_mask=field_mask_pb2.FieldMask(paths=["priority", "conditions"])
            ),
            metadata=auth("admin", "admin:bob"),
        )
    ).rule
    assert (updated.version, updated.priority, updated.updated_by, updated.created_by) == (2, 7, "admin:bob", "admin:ada")
    assert updated.name == created.name and list(updated.actions) == list(created.actions)
    versions = (await rules.ListRuleVersions(rules_pb2.ListRuleVersionsRequest(rule_id=created.rule_id), metadata=ADMIN)).versions
    assert [v.version for v in versions] == [2, 1]
    assert json_format.MessageToDict(versions[1].conditions)["all"][0]["value"] == "confirmed"


async def test_an_update_that_fails_validation_changes_nothing(rules):
    created = await create(rules, rule_message(actions=[EMAIL]))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await rules.UpdateRule(
            rules_pb2.UpdateRuleRequest(
                request_id=str(uuid.uuid4()),
                rule=rules_pb2.Rule(rule_id=created.rule_id, conditions=value({"order_nope": 1})),
                update_mask=field_mask_pb2.FieldMask(paths=["conditions"]),
            ),
            metadata=ADMIN,
        )
    assert "rule.conditions.order_nope" in field_violations(error.value)
    assert (await rules.GetRule(rules_pb2.GetRuleRequest(rule_id=created.rule_id), metadata=ADMIN)).rule.version == 1


async def test_set_active_and_list_filters(rules):
    first = await create(rules, rule_message("a", actions=[EMAIL], priority=1))
    second = await create(rules, rule_message("b", actions=[EMAIL], priority=5))
    off = await rules.SetRuleActive(
        rules_pb2.SetRuleActiveRequest(request_id=str(uuid.uuid4()), rule_id=first.rule_id, active=False), metadata=ADMIN
    )
    assert (off.rule.active, off.rule.version) == (False, 2)
    active = await rules.ListRules(rules_pb2.ListRulesRequest(active=rules_pb2.ACTIVE_FILTER_ACTIVE), metadata=ADMIN)
    assert [r.rule_id for r in active.rules] == [second.rule_id]
    page = await rules.ListRules(rules_pb2.ListRulesRequest(page_size=1), metadata=ADMIN)
    assert [r.name for r in page.rules] == ["b"] and page.next_page_token
    rest = await rules.ListRules(rules_pb2.ListRulesRequest(page_size=1, page_token=page.next_page_token), metadata=ADMIN)
    assert [r.name for r in rest.rules] == ["a"]


async def test_delete_is_soft_and_hides_the_rule(rules):
    created = await create(rules, rule_message(actions=[EMAIL]))
    await rules.DeleteRule(rules_pb2.DeleteRuleRequest(request_id=str(uuid.uuid4()), rule_id=created.rule_id), metadata=ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await rules.GetRule(rules_pb2.GetRuleRequest(rule_id=created.rule_id), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_replayed_create_returns_the_first_answer(rules):
    request = rules_pb2.CreateRuleRequest(request_id=str(uuid.uuid4()), rule=rule_message(actions=[EMAIL]))
    first = await rules.CreateRule(request, metadata=ADMIN)
    again = await rules.CreateRule(request, metadata=ADMIN)
    assert first == again
    assert len((await rules.ListRules(rules_pb2.ListRulesRequest(), metadata=ADMIN)).rules) == 1


async def test_only_admins_manage_rules(rules):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await rules.CreateRule(
            rules_pb2.CreateRuleRequest(request_id="x", rule=rule_message(actions=[EMAIL])), metadata=auth("buyer")
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_rule_ids_are_not_found(rules):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await rules.GetRule(rules_pb2.GetRuleRequest(rule_id="not-a-uuid"), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
