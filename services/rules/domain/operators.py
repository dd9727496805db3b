"""Condition operators: how one fact's actual value is tested against a leaf's value.

Each operator validates its leaf value once (on save) and builds a predicate over
the actual value. A fact that is missing fails every operator except `exists`.
Numbers compare across int, float and decimal strings ("4.75"); strings compare
exactly; booleans are never numbers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import regex  # type: ignore[import-untyped]  # no stubs installed (types-regex is not a dependency)


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
Predicate = Callable[[Any], bool]


class OperatorError(Exception):
    """Evaluating a leaf failed (a regex timed out, an input was too long): the leaf does not pass."""


@dataclass(frozen=True)
class RegexLimits:
    """Bounds of the `matches` operator: a backtracking engine can take exponential time, so both length and time are capped."""

    max_pattern_length: int = 256
    max_input_length: int = 4096
    timeout_seconds: float = 0.05


# The default bounds, shared as the default argument (the dataclass is frozen, so sharing is safe).
DEFAULT_LIMITS = RegexLimits()


def as_number(value: Any) -> int | float | Decimal | None:
    """The value as a number, or None: ints, floats and finite decimal strings; never bools."""
    kind = type(value)
    if kind is int or kind is Decimal:
        return value
    if kind is float:
        return value if value == value else None  # NaN is no number to compare
    if kind is str:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _is_number_constant(value: Any) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int or (type(value) is str and as_number(value) is not None)


def _scalar_key(value: Any) -> tuple[str, Any]:
    """A hashable key under which equal scalars meet: numbers by value, bools and strings apart."""
    if type(value) is bool:
        return ("bool", value)
    number = as_number(value) if type(value) is not str else None
    if number is not None:
        return ("number", number)
    return (type(value).__name__, value if isinstance(value, str | type(None)) else repr(value))


def _same(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    if type(expected) is bool or type(actual) is bool:
        return type(expected) is type(actual) and actual == expected
    if type(expected) in (int, float):
        number = as_number(actual)
        return number is not None and number == expected
    return type(actual) is type(expected) and actual == expected


# --- predicates -----------------------------------------------------------------


def _equal(expected: Any, _: RegexLimits) -> Predicate:
    if type(expected) is str:
        return lambda actual: actual == expected and type(actual) is str
    if type(expected) is int or (type(expected) is float and math.isfinite(expected)):

        def equal_number(actual: Any) -> bool:
            kind = type(actual)
            if kind is int or kind is float:
                return actual == expected
            number = as_number(actual)
            return number is not None and number == expected

        return equal_number
    return lambda actual: _same(actual, expected)


def _not_equal(expected: Any, limits: RegexLimits) -> Predicate:
    equal = _equal(expected, limits)
    return lambda actual: actual is not MISSING and not equal(actual)


def _in(expected: list, _: RegexLimits) -> Predicate:
    strings = frozenset(v for v in expected if type(v) is str)
    others = frozenset(_scalar_key(v) for v in expected if type(v) is not str)

    def member(actual: Any) -> bool:
        if type(actual) is str:
            return actual in strings
        if actual is MISSING or isinstance(actual, dict | list):
            return False
        return _scalar_key(actual) in others

    return member


def _not_in(expected: list, limits: RegexLimits) -> Predicate:
    member = _in(expected, limits)
    return lambda actual: actual is not MISSING and not member(actual)


def _comparison(compare: Callable[[Any, Any], bool]) -> Callable[[Any, RegexLimits], Predicate]:
    def build(expected: Any, _: RegexLimits) -> Predicate:
        bound = as_number(expected)
        if type(bound) is Decimal:
            # A decimal bound ("4.75") compares exactly; a float NaN must not reach it.
            def test_decimal(actual: Any) -> bool:
                number = as_number(actual)
                return number is not None and compare(number, bound)

            return test_decimal

        def test(actual: Any) -> bool:
            kind = type(actual)
            if kind is int or kind is float:
                return compare(actual, bound)
            number = as_number(actual)
            return number is not None and compare(number, bound)

        return test

    return build


def _between(expected: list, _: RegexLimits) -> Predicate:
    low, high = as_number(expected[0]), as_number(expected[1])
    assert low is not None and high is not None, "validated by _need_range"

    def test(actual: Any) -> bool:
        number = as_number(actual)
        return number is not None and low <= number <= high

    return test


def _contains(expected: Any, _: RegexLimits) -> Predicate:
    def test(actual: Any) -> bool:
        if type(actual) is str:
            return type(expected) is str and expected in actual
        if type(actual) is list:
            return any(_same(item, expected) for item in actual)
        return False

    return test


def _starts_with(expected: str, _: RegexLimits) -> Predicate:
    return lambda actual: type(actual) is str and actual.startswith(expected)


def _exists(expected: Any, _: RegexLimits) -> Predicate:
    wanted = True if expected is None else bool(expected)
    return lambda actual: (actual is not MISSING and actual is not None) == wanted


def bounded_search(pattern: regex.Pattern[str], text: str, limits: RegexLimits) -> bool:
    """pattern.search(text) within the limits, else OperatorError.

    The `regex` engine checks its own deadline as it backtracks, so the time bound
    holds on any thread (the worker, a gRPC handler, a to_thread call) without signals.
    """
    if len(text) > limits.max_input_length:
        raise OperatorError(f"input longer than {limits.max_input_length} characters")
    try:
        return pattern.search(text, timeout=limits.timeout_seconds) is not None
    except TimeoutError:
        raise OperatorError(f"regex took longer than {limits.timeout_seconds * 1000:g} ms") from None


def _matches(expected: str, limits: RegexLimits) -> Predicate:
    pattern = regex.compile(expected)

    def test(actual: Any) -> bool:
        return type(actual) is str and bounded_search(pattern, actual, limits)

    return test


# --- value validation ------------------------------------------------------------


def _need_scalar(value: Any, _: RegexLimits) -> str | None:
    if isinstance(value, dict | list):
        return "a single value (string, number, boolean or null)"
    return None


def _need_list(value: Any, _: RegexLimits) -> str | None:
    if not isinstance(value, list) or not value:
        return "a non-empty list of values"
    if any(isinstance(v, dict | list) for v in value):
        return "a list of single values"
    return None


def _need_number(value: Any, _: RegexLimits) -> str | None:
    return None if _is_number_constant(value) else "a number (or a decimal string like \"4.75\")"


def _need_range(value: Any, _: RegexLimits) -> str | None:
    if not isinstance(value, list) or len(value) != 2 or not all(_is_number_constant(v) for v in value):
        return "a list of two numbers [low, high]"
    low, high = as_number(value[0]), as_number(value[1])
    assert low is not None and high is not None  # both are number constants, checked just above
    if low > high:
        return "low must not exceed high"
    return None


def _need_string(value: Any, _: RegexLimits) -> str | None:
    return None if isinstance(value, str) else "a string"


def _need_bool_or_nothing(value: Any, _: RegexLimits) -> str | None:
    return None if value is None or isinstance(value, bool) else "true, false or omitted"


def _need_regex(value: Any, limits: RegexLimits) -> str | None:
    if not isinstance(value, str):
        return "a regular expression string"
    if len(value) > limits.max_pattern_length:
        return f"regular expression longer than {limits.max_pattern_length} characters"
    try:
        regex.compile(value)
    except regex.error as error:
        return f"regular expression does not compile: {error}"
    return None


@dataclass(frozen=True)
class Operator:
    name: str
    value_problem: Callable[[Any, RegexLimits], str | None]
    build: Callable[[Any, RegexLimits], Predicate]
    # Predicates that may raise OperatorError (evaluation then records the error).
    may_fail: bool = False


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in (
        Operator("equal", _need_scalar, _equal),
        Operator("not_equal", _need_scalar, _not_equal),
        Operator("in", _need_list, _in),
        Operator("not_in", _need_list, _not_in),
        Operator("less_than", _need_number, _comparison(operator.lt)),
        Operator("less_than_inclusive", _need_number, _comparison(operator.le)),
        Operator("greater_than", _need_number, _comparison(operator.gt)),
        Operator("greater_than_inclusive", _need_number, _comparison(operator.ge)),
        Operator("between", _need_range, _between),
        Operator("contains", _need_scalar, _contains),
        Operator("starts_with", _need_string, _starts_with),
        Operator("exists", _need_bool_or_nothing, _exists),
        Operator("matches", _need_regex, _matches, may_fail=True),
    )
}
