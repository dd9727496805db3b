"""Condition trees and the compact form: normalisation, validation paths, evaluation, traces."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.rules.domain.conditions import Violation, compile_condition, normalise
from services.rules.domain.operators import OPERATORS


def tree_of(raw):
    found: list[Violation] = []
    tree = normalise(raw, "rule.conditions", found)
    assert not found, found
    return tree


def problems_of(raw) -> dict[str, str]:
    found: list[Violation] = []
    normalise(raw, "rule.conditions", found)
    return {v.field: v.description for v in found}


def test_the_compact_form_users_write_becomes_a_tree():
    compact = {
        "order_status": "awaiting_supplier",
        "supplier_capacity": {"min": 100, "max": 1000},
        "delivery_time": "< 30 days",
        "completion_percentage": "> 75%",
    }
    assert tree_of(compact) == {
        "all": [
            {"fact": "batch.fill_percentage", "operator": "greater_than", "value": 75},
            {"fact": "supplier.lead_time_days", "operator": "less_than", "value": 30},
            {"fact": "order.status", "operator": "equal", "value": "awaiting_supplier"},
            {"fact": "supplier.capacity", "operator": "between", "value": [100, 1000]},
        ]
    }


@pytest.mark.parametrize(
    ("value", "leaf"),
    [
        ({"min": 5}, ("greater_than_inclusive", 5)),
        ({"max": 5}, ("less_than_inclusive", 5)),
        (">= 60%", ("greater_than_inclusive", 60)),
        ("<=2.5 days", ("less_than_inclusive", 2.5)),
        ("!= 0", ("not_equal", 0)),
        (["t_shirts", "hoodies"], ("in", ["t_shirts", "hoodies"])),
        ({"starts_with": "t_"}, ("starts_with", "t_")),
        ("t_shirts", ("equal", "t_shirts")),
    ],
)
def test_compact_values_map_to_operators(value, leaf):
    (only,) = tree_of({"batch_category": value})["all"]
    assert (only["operator"], only["value"]) == leaf


def test_a_tree_is_kept_as_given_and_normalising_twice_changes_nothing():
    tree = {"any": [{"not": {"fact": "order.status", "operator": "equal", "value": "placed"}}, {"all": []}]}
    assert tree_of(tree) == tree
    assert tree_of(tree_of({"order_quantity": "> 10"})) == tree_of({"order_quantity": "> 10"})


def test_compact_children_inside_a_tree_are_normalised():
    assert tree_of({"any": [{"order_status": "placed"}]}) == {
        "any": [{"all": [{"fact": "order.status", "operator": "equal", "value": "placed"}]}]
    }


def test_violations_point_at_the_offending_part():
    problems = problems_of(
        {
            "all": [
                {"fact": "order.status", "operator": "resembles", "value": 1},
                {"any": [{"fact": "Order..status", "operator": "equal", "value": 1}]},
                {"fact": "order.reference", "operator": "matches", "value": "([a-z]"},
            ]
        }
    )
    assert set(problems) == {
        "rule.conditions.all[0].operator",
        "rule.conditions.all[1].any[0].fact",
        "rule.conditions.all[2].fact",
        "rule.conditions.all[2].value",
    }
    assert "unknown operator" in problems["rule.conditions.all[0].operator"]
    assert "does not compile" in problems["rule.conditions.all[2].value"]


def test_compact_violations_name_the_key():
    problems = problems_of({"order_colour": "red", "supplier_capacity": {"min": 1, "avg": 2}})
    assert set(problems) == {"rule.conditions.order_colour", "rule.conditions.supplier_capacity"}


def test_a_node_with_two_structural_keys_is_rejected():
    assert "rule.conditions" in problems_of({"all": [], "any": []})


def test_evaluation_and_trace_agree_and_show_actual_values():
    condition = compile_condition(tree_of({"batch_fill_percentage": ">= 75", "supplier_rating": {"min": 4}}))
    facts = {"batch": {"fill_percentage": 80.0}, "supplier": {"rating": 3.5}}
    trace = condition.trace(facts)
    assert condition.test(facts) is trace.passed is False
    fill, rating = trace.children
    assert (fill.fact, fill.actual, fill.passed) == ("batch.fill_percentage", 80.0, True)
    assert (rating.actual, rating.passed) == (3.5, False)


def test_a_missing_fact_is_traced_as_absent():
    trace = compile_condition(tree_of({"order_status": "placed"})).trace({"batch": {}})
    (leaf,) = trace.children
    assert leaf.fact_present is False and leaf.passed is False and leaf.actual is None


def test_a_regex_timeout_is_traced_as_an_error_and_does_not_pass():
    from services.rules.domain.operators import RegexLimits

    tree = {"fact": "order.id", "operator": "matches", "value": "(x+x+)+y"}
    condition = compile_condition(tree, RegexLimits(timeout_seconds=0.01))
    facts = {"order": {"id": "x" * 1000}}
    assert condition.test(facts) is False
    assert "ms" in condition.trace(facts).error


# --- properties ----------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=8))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
facts_strategy = st.dictionaries(
    st.sampled_from(["order", "batch", "supplier", "best_supplier_id", "x"]),
    st.one_of(
        json_values, st.dictionaries(st.sampled_from(["id", "status", "quantity", "fill_percentage", "rating"]), json_values)
    ),
    max_size=4,
)
leaf_values = {
    "equal": st.one_of(json_scalars),
    "not_equal": json_scalars,
    "in": st.lists(json_scalars, min_size=1, max_size=4),
    "not_in": st.lists(json_scalars, min_size=1, max_size=4),
    "less_than": st.integers(-100, 100),
    "less_than_inclusive": st.decimals(-100, 100, places=2, allow_nan=False).map(str),
    "greater_than": st.floats(-100, 100),
    "greater_than_inclusive": st.integers(-100, 100),
    "between": st.tuples(st.integers(-100, 0), st.integers(0, 100)).map(list),
    "contains": json_scalars,
    "starts_with": st.text(max_size=3),
    "exists": st.sampled_from([None, True, False]),
    "matches": st.sampled_from(["^a", "b$", r"\d+", "(x|y)z?"]),
}
leaves = st.sampled_from(sorted(OPERATORS)).flatmap(
    lambda op: st.builds(
        lambda fact, value: {"fact": fact, "operator": op, "value": value},
        st.sampled_from(["order.status", "order.quantity", "batch.fill_percentage", "supplier.rating", "best_supplier_id"]),
        leaf_values[op],
    )
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda c: {"all": c}),
        st.lists(inner, max_size=3).map(lambda c: {"any": c}),
        inner.map(lambda c: {"not": c}),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(trees, facts_strategy)
def test_evaluation_never_raises_and_the_trace_agrees(tree, facts):
    condition = compile_condition(tree_of(tree))
    assert condition.test(facts) is condition.trace(facts).passed


@settings(max_examples=300, deadline=None)
@given(trees, facts_strategy)
def test_not_inverts(tree, facts):
    assert compile_condition({"not": tree}).test(facts) is (not compile_condition(tree).test(facts))
