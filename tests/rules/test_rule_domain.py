"""Rule validation, templates, evaluation order and execution status."""

import pytest

from services.rules.domain.evaluation import (
    ActiveRule,
    action_request_id,
    evaluate,
    event_facts,
    execution_status,
    facts_to_fetch,
    in_evaluation_order,
)
from services.rules.domain.rules import InvalidRule, RuleDefinition, validated
from services.rules.domain.templates import RenderError, render

EMAIL = {"type": "send_email", "params": {"recipient": "ops@example.com", "subject": "Batch {{batch.id}}", "body": "ok"}}


def violations(rule: RuleDefinition) -> dict[str, str]:
    with pytest.raises(InvalidRule) as error:
        validated(rule)
    return {v.field: v.description for v in error.value.violations}


def test_a_valid_rule_comes_back_with_its_conditions_normalised():
    rule = validated(RuleDefinition(name="r", type="notification", conditions={"batch_status": "confirmed"}, actions=[EMAIL]))
    assert rule.conditions == {"all": [{"fact": "batch.status", "operator": "equal", "value": "confirmed"}]}


def test_unknown_action_and_template_variable_are_field_violations():
    found = violations(
        RuleDefinition(
            name="r",
            type="notification",
            event_types=["batch.exploded"],
            actions=[
                {"type": "launch_rocket", "params": {}},
                {"type": "send_email", "params": {"recipient": "{{buyer.email}}", "subject": "s", "body": "{{order.idd}}"}},
            ],
        )
    )
    assert set(found) == {
        "rule.event_types[0]",
        "rule.actions[0].type",
        "rule.actions[1].params.recipient",
        "rule.actions[1].params.body",
    }
    assert "unknown fact 'buyer'" in found["rule.actions[1].params.recipient"]


def test_action_parameters_are_checked_per_action_type():
    found = violations(
        RuleDefinition(
            name="r",
            type="status_update",
            actions=[
                {"type": "update_status", "params": {"entity": "order", "id": "{{order.id}}", "status": "teleported"}},
                {"type": "update_status", "params": {"entity": "batch", "id": "{{batch.id}}", "status": "confirmed"}},
                {"type": "assign_supplier", "params": {"entity": "supplier", "id": "x", "supplier_id": "y", "colour": 1}},
                {"type": "trigger_workflow", "params": {"params": {}}},
            ],
        )
    )
    assert set(found) == {
        "rule.actions[0].params.status",
        "rule.actions[1].params.status",
        "rule.actions[2].params.entity",
        "rule.actions[2].params.colour",
        "rule.actions[3].params.job",
    }


def test_a_rule_needs_a_name_a_type_and_an_action():
    assert set(violations(RuleDefinition(name=" ", type="nope"))) == {"rule.name", "rule.type", "rule.actions"}


def test_templates_render_typed_values_alone_and_text_inside_strings():
    facts = {"order": {"id": "o-1", "quantity": 40.0}, "best_supplier_id": "s-9"}
    assert render(
        {"id": "{{order.id}}", "n": "{{ order.quantity }}", "t": "{{order.quantity}} units from {{best_supplier_id}}"}, facts
    ) == {
        "id": "o-1",
        "n": 40.0,
        "t": "40 units from s-9",
    }
    with pytest.raises(RenderError, match="order.status"):
        render("{{order.status}}", facts)


def rule(rule_id: str, priority: int, conditions: dict, *, stop: bool = False, event_types=()) -> ActiveRule:
    return ActiveRule.compile(
        rule_id=rule_id,
        name=f"rule {rule_id}",
        version=1,
        priority=priority,
        event_types=list(event_types),
        stop_processing=stop,
        conditions=validated(RuleDefinition(name="r", type="workflow", conditions=conditions, actions=[EMAIL])).conditions,
        actions=[EMAIL],
    )


FACTS = event_facts("e-1", "batch.confirmed", "batch", "2025-01-01T00:00:00Z", {"batch": {"id": "b-1", "fill_percentage": 80.0}})


def test_rules_run_highest_priority_first_and_stop_processing_skips_the_rest():
    rules = in_evaluation_order(
        [rule("low", 1, {}), rule("high", 9, {"batch_fill_percentage": "> 75"}, stop=True), rule("mid", 5, {})]
    )
    assert [r.rule_id for r in rules] == ["high", "mid", "low"]
    assert [o.rule.rule_id for o in evaluate(rules, "batch.confirmed", FACTS)] == ["high"]
    traced = evaluate(rules, "batch.confirmed", FACTS, traced=True)
    assert [(o.rule.rule_id, o.matched) for o in traced] == [("high", True), ("mid", False), ("low", False)]
    assert "stopped by rule 'rule high'" in traced[1].skipped_reason


def test_a_rule_only_sees_the_event_types_it_listens_to():
    listening = rule("a", 1, {}, event_types=["order.placed"])
    assert evaluate([listening], "batch.confirmed", FACTS) == []
    assert "does not listen" in evaluate([listening], "batch.confirmed", FACTS, traced=True)[0].skipped_reason


def test_a_traced_match_shows_its_actions_with_rendered_parameters():
    (outcome,) = evaluate([rule("a", 1, {})], "batch.confirmed", FACTS, traced=True)
    assert outcome.actions[0].params["subject"] == "Batch b-1"


def test_only_missing_facts_that_listening_rules_name_are_fetched():
    needs_best = rule("a", 1, {"best_supplier_id": {"exists": True}})
    needs_batch = rule("b", 1, {"batch_capacity": "> 1"}, event_types=["order.placed"])
    assert facts_to_fetch([needs_best, needs_batch], "batch.confirmed", FACTS) == {"best_supplier_id"}
    assert facts_to_fetch([needs_batch], "order.placed", {"order": {}}) == {"batch"}


@pytest.mark.parametrize(
    ("statuses", "status"),
    [(["succeeded", "succeeded"], "success"), (["succeeded", "failed"], "partial"), (["failed", "failed"], "failed")],
)
def test_execution_status_follows_its_actions(statuses, status):
    assert execution_status(statuses) == status


def test_action_request_ids_are_deterministic_per_execution_and_index():
    assert action_request_id("x", 0) == action_request_id("x", 0)
    assert len({action_request_id("x", 0), action_request_id("x", 1), action_request_id("y", 0)}) == 3
