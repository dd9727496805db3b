"""Pure decisions at their boundaries: loop depth, rate limit, circuit breaker, wait endings, version diff."""

from __future__ import annotations

import pytest

from services.rules.domain.diff import diff
from services.rules.domain.guards import Link, breaker_trips, causation_of, refusal
from services.rules.domain.waits import after_wait, cancelled

A, B = "rule-a", "rule-b"


def chain(*rules: str) -> list[Link]:
    return [Link(rule, f"x{i}", f"e{i}") for i, rule in enumerate(rules)]


@pytest.mark.parametrize(("links", "refused"), [((), False), ((A, A), False), ((A, B, A, B), False), ((A, A, A), True)])
def test_the_loop_guard_counts_only_the_rules_own_links(links, refused):
    assert bool(refusal(A, chain(*links), max_depth=3, per_minute=0, last_minute=0)) == refused


@pytest.mark.parametrize(("per_minute", "last_minute", "refused"), [(0, 10**6, False), (5, 4, False), (5, 5, True)])
def test_the_rate_limit_refuses_from_the_limit_on(per_minute, last_minute, refused):
    assert bool(refusal(A, [], max_depth=3, per_minute=per_minute, last_minute=last_minute)) == refused


@pytest.mark.parametrize(
    ("latest", "trips"),
    [
        (["failed"] * 5, True),
        (["failed"] * 4, False),
        (["failed"] * 4 + ["success"], False),
        (["success"] + ["failed"] * 5, False),  # newest first: the latest one succeeded
        (["failed"] * 5 + ["success"], True),
    ],
)
def test_the_breaker_trips_on_the_latest_failures_only(latest, trips):
    assert breaker_trips(latest, 5) == trips


def test_a_breaker_of_zero_never_trips():
    assert not breaker_trips(["failed"] * 10, 0)


def test_malformed_causation_is_ignored():
    assert causation_of({"causation": "nope"}) == []
    assert causation_of({"causation": [{"rule_id": A}, 3]}) == [Link(A, "", "")]


ACTIONS = [
    {"index": 0, "type": "wait", "status": "waiting", "error": ""},
    {"index": 1, "type": "trigger_workflow", "status": "pending", "error": ""},
]


def test_a_due_wait_whose_conditions_hold_continues():
    actions, status = after_wait(ACTIONS, 0, still_holds=True)
    assert status == "running" and [a["status"] for a in actions] == ["succeeded", "pending"]


def test_a_due_wait_whose_conditions_fail_skips_the_rest():
    actions, status = after_wait(ACTIONS, 0, still_holds=False)
    assert status == "partial" and [a["status"] for a in actions] == ["succeeded", "skipped"]


def test_a_wait_as_last_action_finishes_the_execution():
    actions, status = after_wait([{**ACTIONS[0]}], 0, still_holds=True)
    assert status == "success"


def test_a_cancelled_wait_skips_itself_and_the_rest():
    actions, status = cancelled(ACTIONS, 0)
    assert status == "failed" and {a["error"] for a in actions} == {"wait cancelled"}


def test_the_diff_reports_additions_removals_and_type_changes():
    changes = {(c.path, c.kind) for c in diff({"a": 1, "b": [1, 2], "c": "x"}, {"a": 1.5, "b": [1], "d": True, "c": "x"})}
    assert changes == {("a", "changed"), ("b[1]", "removed"), ("d", "added")}
    assert diff({"n": 1}, {"n": True}) != []  # 1 == True in Python, not in a rule
