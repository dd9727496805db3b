"""Operators at their boundaries: numbers across types, missing facts, bounded regex."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.rules.domain.operators import (
    DEFAULT_LIMITS,
    MISSING,
    OPERATORS,
    OperatorError,
    RegexLimits,
)


def check(operator: str, expected, actual, limits: RegexLimits = DEFAULT_LIMITS) -> bool:
    return OPERATORS[operator].build(expected, limits)(actual)


@pytest.mark.parametrize(
    ("operator", "expected", "actual", "passed"),
    [
        ("greater_than", 75, 75, False),
        ("greater_than", 75, 75.0001, True),
        ("greater_than_inclusive", 75, 75, True),
        ("greater_than_inclusive", 75, 74.999, False),
        ("less_than", 30, 30, False),
        ("less_than", 30, 29, True),
        ("less_than_inclusive", 30, 30, True),
        ("less_than_inclusive", 30, 31, False),
        ("greater_than", "4.75", "4.76", True),
        ("greater_than", "4.75", "4.75", False),
        ("greater_than", 4, "4.5", True),
        ("less_than", "4.75", 4.7, True),
        ("greater_than", 1, True, False),
        ("greater_than", 1, "not a number", False),
        ("greater_than", 1, float("nan"), False),
        ("greater_than", "1", float("nan"), False),
        ("between", [100, 1000], 100, True),
        ("between", [100, 1000], 1000, True),
        ("between", [100, 1000], 99, False),
        ("between", [100, 1000], 1001, False),
        ("between", ["0.5", "1.5"], "1.5", True),
    ],
)
def test_comparisons_are_exact_at_the_bound(operator, expected, actual, passed):
    assert check(operator, expected, actual) is passed


@pytest.mark.parametrize(
    ("expected", "actual", "passed"),
    [
        ("filling", "filling", True),
        ("filling", "Filling", False),
        (5, 5.0, True),
        (5, "5", True),
        ("5", 5, False),
        (True, 1, False),
        (1, True, False),
        (None, None, True),
    ],
)
def test_equal_compares_numbers_by_value_and_strings_exactly(expected, actual, passed):
    assert check("equal", expected, actual) is passed


def test_in_and_not_in_use_the_same_membership():
    statuses = ["placed", "awaiting_supplier", 3]
    assert check("in", statuses, "placed")
    assert check("in", statuses, 3.0)
    assert not check("in", statuses, "confirmed")
    assert check("not_in", statuses, "confirmed")
    assert not check("not_in", statuses, "placed")


@pytest.mark.parametrize("operator", sorted(set(OPERATORS) - {"exists"}))
def test_a_missing_fact_fails_every_operator_but_exists(operator):
    samples = {"in": ["a"], "not_in": ["a"], "between": [1, 2], "matches": "a", "starts_with": "a"}
    assert check(operator, samples.get(operator, 1), MISSING) is False


def test_exists_distinguishes_missing_and_null_from_present():
    assert check("exists", None, "x") and check("exists", True, 0)
    assert not check("exists", True, MISSING) and not check("exists", True, None)
    assert check("exists", False, MISSING)


def test_contains_and_starts_with():
    assert check("contains", "shirt", "t_shirts")
    assert check("contains", 3, [1, 2, 3.0])
    assert not check("contains", "x", 123)
    assert check("starts_with", "t_", "t_shirts") and not check("starts_with", "t_", "hoodies")


def test_matches_searches_strings_only():
    assert check("matches", r"^ORD-\d{4}$", "ORD-1234")
    assert not check("matches", r"^ORD-\d{4}$", "ORD-12345")
    assert not check("matches", "1", 1)


def test_matches_refuses_inputs_over_the_length_bound():
    with pytest.raises(OperatorError, match="longer than 10"):
        check("matches", "a", "a" * 11, RegexLimits(max_input_length=10))


# Exponential backtracking that the regex engine does not optimise away.
CATASTROPHIC = (r"(x+x+)+y", "x" * 1000)


def timed_search(limits: RegexLimits) -> tuple[str, float]:
    """The error a catastrophic search ends with, and how long it ran."""
    pattern, text = CATASTROPHIC
    started = time.perf_counter()
    with pytest.raises(OperatorError) as raised:
        check("matches", pattern, text, limits)
    return str(raised.value), time.perf_counter() - started


@pytest.mark.timeout(10)
def test_a_catastrophic_regex_is_stopped_by_the_time_bound():
    message, took = timed_search(RegexLimits(max_input_length=1000, timeout_seconds=0.02))
    assert message == "regex took longer than 20 ms" and took < 1.0


@pytest.mark.timeout(10)
def test_the_regex_time_bound_holds_off_the_main_thread():
    with ThreadPoolExecutor(1) as pool:
        worker_thread, (message, took) = pool.submit(
            lambda: (threading.current_thread(), timed_search(RegexLimits(max_input_length=1000, timeout_seconds=0.05)))
        ).result(timeout=5)
    assert worker_thread is not threading.main_thread()
    assert message == "regex took longer than 50 ms" and took < 1.0


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("in", "not a list"),
        ("in", []),
        ("between", [5, 1]),
        ("between", [1]),
        ("greater_than", "abc"),
        ("greater_than", float("inf")),
        ("matches", "(unclosed"),
        ("matches", "a" * 300),
        ("starts_with", 5),
        ("equal", {"a": 1}),
        ("exists", "yes"),
    ],
)
def test_bad_values_are_reported(operator, value):
    assert OPERATORS[operator].value_problem(value, RegexLimits()) is not None
