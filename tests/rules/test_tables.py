"""Decision tables: DMN hit policies at their edges, validation on save, the overlap and gap checks,
the row-by-row trace, and the generated fast path agreeing with the hit policy."""

from __future__ import annotations

import pytest

from services.rules.domain.conditions import Violation, compile_condition, normalise
from services.rules.domain.evaluation import ActiveRule, evaluate
from services.rules.domain.rules import (
    InvalidRule,
    RuleDefinition,
    table_warnings,
    validated,
)

NOTIFY = {"type": "trigger_workflow", "params": {"job": "discount", "params": {"percent": "{{decision.discount}}"}}}


def table(policy: str, rows: list, *, outputs=("discount",), aggregation=None, inputs=("order.quantity",)) -> dict:
    raw = {"hit_policy": policy, "inputs": list(inputs), "outputs": list(outputs), "rules": rows}
    if aggregation:
        raw["aggregation"] = aggregation
    return {"table": raw}


def row(*cells, **then) -> dict:
    return {"when": list(cells), "then": then}


def compiled(raw: dict):
    found: list[Violation] = []
    tree = normalise(raw, "conditions", found)
    assert not found, found
    return compile_condition(tree)


def decision(raw: dict, quantity, category="caps"):
    condition = compiled(raw)
    facts = {"order": {"quantity": quantity, "category": category}}
    made = condition.decide(facts)
    assert condition.test(facts) == (made.outputs is not None)  # the fast path agrees with the policy
    return made


QUANTITY_BANDS = [row("< 10", discount=0), row({"min": 10, "max": 100}, discount=5), row("> 100", discount=10)]


@pytest.mark.parametrize(("quantity", "discount"), [(9, 0), (9.5, 0), (10, 5), (100, 5), (100.5, 10), (101, 10)])
def test_unique_yields_the_one_matching_row_at_the_band_edges(quantity, discount):
    assert decision(table("UNIQUE", QUANTITY_BANDS), quantity).outputs == {"discount": discount}


def test_no_matching_row_means_no_decision_and_no_match():
    made = decision(table("FIRST", [row("> 10", discount=5)]), 3)
    assert (made.hits, made.outputs, made.error) == ((), None, "")


def test_unique_with_two_matching_rows_at_run_time_is_an_error_not_a_match():
    # Different facts per row cannot be checked for overlap on save; the run-time check catches it.
    raw = table(
        "UNIQUE", [row("> 10", "-", discount=5), row("-", "caps", discount=7)], inputs=("order.quantity", "order.category")
    )
    made = decision(raw, 20, "caps")
    assert made.outputs is None and made.error == "UNIQUE table: rows 1, 2 all match"


def test_first_takes_the_first_matching_row_in_table_order():
    raw = table("FIRST", [row("> 50", discount=10), row("> 10", discount=5)])
    assert decision(raw, 60).outputs == {"discount": 10}
    assert decision(raw, 20).outputs == {"discount": 5}


def test_any_accepts_overlapping_rows_that_agree():
    raw = table("ANY", [row("> 10", discount=5), row("> 20", discount=5)])
    assert decision(raw, 30).outputs == {"discount": 5}


def test_priority_takes_the_highest_priority_output_not_the_first_row():
    outputs = [{"name": "tier", "priorities": ["gold", "silver", "bronze"]}]
    raw = table("PRIORITY", [row("> 0", tier="bronze"), row("> 50", tier="gold"), row("> 20", tier="silver")], outputs=outputs)
    assert decision(raw, 60).outputs == {"tier": "gold"}
    assert decision(raw, 30).outputs == {"tier": "silver"}
    assert decision(raw, 30).chosen == (2,)


def test_priority_ties_go_to_the_first_row_in_table_order():
    outputs = [{"name": "tier", "priorities": ["gold", "silver"]}, "note"]
    raw = table("PRIORITY", [row("> 0", tier="silver", note="first"), row("> 0", tier="silver", note="second")], outputs=outputs)
    made = decision(raw, 5)
    assert made.outputs == {"tier": "silver", "note": "first"} and made.chosen == (0,)


COLLECTED = [row("> 0", discount=2), row("> 10", discount=3), row("> 20", discount=5)]


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (None, {"discount": [2, 3, 5]}),
        ("SUM", {"discount": 10}),
        ("MIN", {"discount": 2}),
        ("MAX", {"discount": 5}),
        ("COUNT", {"discount": 3}),
    ],
)
def test_collect_returns_every_match_or_its_aggregate(aggregation, expected):
    assert decision(table("COLLECT", COLLECTED, aggregation=aggregation), 25).outputs == expected


def test_collect_count_of_no_match_is_no_decision():
    assert decision(table("COLLECT", COLLECTED, aggregation="COUNT"), -5).outputs is None


def rule(conditions: dict, actions=(NOTIFY,)) -> RuleDefinition:
    return RuleDefinition(name="table", type="workflow", conditions=conditions, actions=list(actions))


def violations(definition: RuleDefinition) -> dict[str, str]:
    with pytest.raises(InvalidRule) as failure:
        validated(definition)
    return {v.field: v.description for v in failure.value.violations}


def test_overlapping_rows_of_a_unique_table_are_refused_on_save_with_an_example():
    found = violations(rule(table("UNIQUE", [row("< 20", discount=0), row(">= 10", discount=5)])))
    assert found == {"rule.conditions.table.rules[1]": "overlaps rules[0] under UNIQUE: both match order.quantity=10"}


def test_overlapping_rows_of_an_any_table_are_refused_only_when_their_outputs_differ():
    validated(rule(table("ANY", [row("< 20", discount=5), row(">= 10", discount=5)])))
    assert "rule.conditions.table.rules[1]" in violations(rule(table("ANY", [row("< 20", discount=5), row(">= 10", discount=6)])))


def test_overlaps_across_two_string_and_number_columns_are_found():
    raw = table(
        "UNIQUE",
        [row("> 5", ["caps", "hoodies"], discount=1), row("< 50", "-", discount=2)],
        inputs=("order.quantity", "order.category"),
    )
    assert "rule.conditions.table.rules[1]" in violations(rule(raw))


def test_gaps_are_warnings_that_name_an_uncovered_input():
    definition = validated(rule(table("UNIQUE", [row("< 10", discount=0), row("> 20", discount=5)])))
    assert table_warnings(definition) == [
        f"no table rule matches order.quantity={quantity}: the rule does not fire there" for quantity in (10, 15, 20)
    ]


def test_a_gap_between_whole_number_bands_is_found():
    bands = [row({"min": 0, "max": 99}, discount=5), row(">= 100", discount=10)]
    warnings = table_warnings(validated(rule(table("UNIQUE", bands))))
    assert "no table rule matches order.quantity=99.5: the rule does not fire there" in warnings


def test_a_complete_table_has_no_warnings():
    assert table_warnings(validated(rule(table("UNIQUE", QUANTITY_BANDS)))) == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (table("SOMETIMES", QUANTITY_BANDS), "rule.conditions.table.hit_policy"),
        (table("FIRST", QUANTITY_BANDS, aggregation="SUM"), "rule.conditions.table.aggregation"),
        (table("COLLECT", [row("> 1", discount="lots")], aggregation="SUM"), "rule.conditions.table.rules[0].then.discount"),
        (table("PRIORITY", QUANTITY_BANDS), "rule.conditions.table.outputs"),
        (table("FIRST", [row("> 1", "x", discount=1)]), "rule.conditions.table.rules[0].when"),
        (table("FIRST", [row("> 1", price=1)]), "rule.conditions.table.rules[0].then"),
        (table("FIRST", [row("> 1", discount=1)], inputs=("order.colour",)), "rule.conditions.table.inputs[0]"),
        (table("FIRST", [row("soon-ish", discount=1)], inputs=("order.quantity",)) | {}, None),
        ({"all": [table("FIRST", QUANTITY_BANDS), table("FIRST", QUANTITY_BANDS)]}, "rule.conditions"),
    ],
)
def test_malformed_tables_are_refused_field_by_field(raw, field):
    if field is None:  # a literal cell is an `equal` test, valid
        validated(rule(raw))
        return
    assert field in violations(rule(raw))


def test_templates_may_name_only_the_tables_outputs():
    action = {"type": "trigger_workflow", "params": {"job": "{{decision.price}}"}}
    found = violations(rule(table("FIRST", QUANTITY_BANDS), actions=[action]))
    assert found == {"rule.actions[0].params.job": "{{decision.price}}: outputs are discount"}


def test_a_dry_run_traces_the_table_row_by_row_and_renders_its_outputs():
    definition = validated(rule(table("FIRST", [row("> 50", discount=10), row("> 10", discount=5), row("-", discount=0)])))
    active = ActiveRule.compile(
        rule_id="r",
        name="t",
        version=1,
        priority=0,
        event_types=[],
        stop_processing=False,
        conditions=definition.conditions,
        actions=definition.actions,
    )
    (outcome,) = evaluate([active], "order.placed", {"order": {"quantity": 20}}, traced=True)
    trace = outcome.trace
    assert (trace.operator, trace.passed, trace.outputs) == ("table:FIRST", True, {"discount": 5})
    assert [(r.row, r.passed, r.selected) for r in trace.children] == [(1, False, False), (2, True, True), (3, True, False)]
    assert trace.children[1].children[0].actual == 20
    assert outcome.actions[0].params == {"job": "discount", "params": {"percent": 5}}
    (fast,) = evaluate([active], "order.placed", {"order": {"quantity": 20}})
    assert fast.action_facts({"order": {"quantity": 20}})["decision"] == {"discount": 5}
