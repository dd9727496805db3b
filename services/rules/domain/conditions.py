"""Condition trees: parsing (tree or compact form), validation, fast evaluation and tracing.

The stored form is a tree: {"all": [...]}, {"any": [...]}, {"not": node} and leaves
{"fact": "order.status", "operator": "equal", "value": "placed"}. The compact form
users already write — {"order_status": "awaiting_supplier", "supplier_capacity":
{"min": 100, "max": 1000}, "delivery_time": "< 30 days", "completion_percentage":
"> 75%"} — is an `all` of one leaf per key and is normalised to the tree on save.

`compile_condition` gives a closure over plain dicts (the hot path); `trace`
evaluates the same predicates and reports each leaf's actual value.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.rules.domain.operators import MISSING, OPERATORS, OperatorError, RegexLimits
from services.rules.domain.vocabulary import compact_key_to_path, path_problem

Facts = dict[str, Any]
Test = Callable[[Facts], bool]

GROUPS = ("all", "any")
LEAF_KEYS = frozenset({"fact", "operator", "value"})
MAX_DEPTH = 32
_COMPARISON = re.compile(
    r"\s*(<=|>=|<|>|==|=|!=)\s*(-?\d+(?:\.\d+)?)\s*(%|percent|days?|hours?|units?|pcs)?\s*", re.IGNORECASE
)
_COMPARISON_OPERATORS = {
    "<": "less_than",
    "<=": "less_than_inclusive",
    ">": "greater_than",
    ">=": "greater_than_inclusive",
    "=": "equal",
    "==": "equal",
    "!=": "not_equal",
}


@dataclass
class Violation:
    field: str
    description: str


@dataclass
class ConditionTrace:
    operator: str
    passed: bool
    fact: str = ""
    expected: Any = None
    actual: Any = None
    fact_present: bool = False
    children: list[ConditionTrace] = field(default_factory=list)
    error: str = ""


# --- parsing ------------------------------------------------------------------------


def normalise(raw: Any, where: str, violations: list[Violation], limits: RegexLimits = RegexLimits()) -> dict:
    """The tree form of raw conditions (tree or compact); problems go to `violations`."""
    if raw is None or raw == {}:
        return {"all": []}
    return _node(raw, where, violations, 0, limits)


def _node(raw: Any, where: str, violations: list[Violation], depth: int, limits: RegexLimits) -> dict:
    if depth > MAX_DEPTH:
        violations.append(Violation(where, f"conditions nest deeper than {MAX_DEPTH} levels"))
        return {"all": []}
    if not isinstance(raw, dict):
        violations.append(Violation(where, "a condition is an object: all/any/not, a leaf, or the compact form"))
        return {"all": []}
    structural = [key for key in raw if key in (*GROUPS, "not")]
    if structural:
        if len(raw) != 1:
            violations.append(Violation(where, f"a node holds exactly one of all/any/not, not {sorted(raw)}"))
            return {"all": []}
        key = structural[0]
        if key == "not":
            return {"not": _node(raw["not"], f"{where}.not", violations, depth + 1, limits)}
        children = raw[key]
        if not isinstance(children, list):
            violations.append(Violation(f"{where}.{key}", "a list of conditions"))
            return {key: []}
        return {key: [_node(c, f"{where}.{key}[{i}]", violations, depth + 1, limits) for i, c in enumerate(children)]}
    if "fact" in raw:
        return _leaf(raw, where, violations, limits)
    # JSON objects have no order (Struct and JSONB do not keep it): leaves are sorted by key
    # so the normal form is one and the same however the compact form arrived.
    return {"all": [_compact_leaf(key, value, where, violations, limits) for key, value in sorted(raw.items())]}


def _leaf(raw: dict, where: str, violations: list[Violation], limits: RegexLimits) -> dict:
    extra = set(raw) - LEAF_KEYS
    if extra:
        violations.append(Violation(where, f"unknown keys in a leaf: {sorted(extra)}; use fact, operator, value"))
    leaf = {"fact": raw.get("fact"), "operator": raw.get("operator"), "value": raw.get("value")}
    _check_leaf(leaf, where, where, violations, limits)
    return leaf


def _compact_leaf(key: str, value: Any, where: str, violations: list[Violation], limits: RegexLimits) -> dict:
    at = f"{where}.{key}"
    operator, expected = _compact_value(value)
    leaf = {"fact": compact_key_to_path(key), "operator": operator, "value": expected}
    _check_leaf(leaf, at, at, violations, limits, compact=True)
    return leaf


def _compact_value(value: Any) -> tuple[str, Any]:
    """The operator and value a compact-form value means."""
    if isinstance(value, dict):
        if value and set(value) <= {"min", "max"}:
            if "min" in value and "max" in value:
                return "between", [value["min"], value["max"]]
            if "min" in value:
                return "greater_than_inclusive", value["min"]
            return "less_than_inclusive", value["max"]
        if len(value) == 1:
            (operator, expected), = value.items()
            return operator, expected
        return "range", value  # reported: neither {min,max} nor {operator: value}
    if isinstance(value, list):
        return "in", value
    if isinstance(value, str):
        comparison = _COMPARISON.fullmatch(value)
        if comparison:
            number = comparison.group(2)
            return _COMPARISON_OPERATORS[comparison.group(1)], float(number) if "." in number else int(number)
    return "equal", value


def _check_leaf(
    leaf: dict, fact_at: str, value_at: str, violations: list[Violation], limits: RegexLimits, compact: bool = False
) -> None:
    problem = path_problem(leaf["fact"])
    if problem:
        violations.append(Violation(fact_at if compact else f"{fact_at}.fact", problem))
    operator = OPERATORS.get(leaf["operator"]) if isinstance(leaf["operator"], str) else None
    if operator is None:
        if compact and leaf["operator"] == "range":
            violations.append(Violation(value_at, "use {\"min\": n, \"max\": m} or {\"<operator>\": value}"))
        else:
            known = ", ".join(OPERATORS)
            at = value_at if compact else f"{fact_at}.operator"
            violations.append(Violation(at, f"unknown operator {leaf['operator']!r}; known: {known}"))
        return
    problem = operator.value_problem(leaf["value"], limits)
    if problem:
        violations.append(Violation(value_at if compact else f"{value_at}.value", f"{operator.name} needs {problem}"))


def fact_paths(tree: dict) -> list[str]:
    """Every fact a (valid) tree names."""
    if "fact" in tree:
        return [tree["fact"]]
    if "not" in tree:
        return fact_paths(tree["not"])
    key = "all" if "all" in tree else "any"
    return [path for child in tree[key] for path in fact_paths(child)]


# --- evaluation ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def fact_getter(path: str) -> Callable[[Facts], Any]:
    """A function reading a dotted path out of nested dicts (MISSING when absent); one per path."""
    parts = tuple(path.split("."))
    if len(parts) == 1:
        (name,) = parts
        return lambda facts: facts.get(name, MISSING)
    if len(parts) == 2:
        entity, name = parts

        def get2(facts: Facts) -> Any:
            found = facts.get(entity)
            return found.get(name, MISSING) if type(found) is dict else MISSING

        return get2

    def get(facts: Facts) -> Any:
        found: Any = facts
        for part in parts:
            if type(found) is not dict:
                return MISSING
            found = found.get(part, MISSING)
        return found

    return get


@dataclass(frozen=True)
class CompiledCondition:
    """A validated tree, ready to evaluate many times."""

    tree: dict
    test: Test
    trace: Callable[[Facts], ConditionTrace]


def compile_condition(tree: dict, limits: RegexLimits = RegexLimits()) -> CompiledCondition:
    predicates: dict[int, Any] = {}  # built once per leaf, on the first trace
    return CompiledCondition(tree, _SourceBuilder(limits).build(tree), lambda facts: _trace(tree, facts, limits, predicates))


class _SourceBuilder:
    """Turns a validated tree into the source of one Python function, compiled once.

    The hot path is one call with no per-leaf closures: each entity is looked up once,
    each leaf is an inline expression whose fast path covers the common actual types
    (numbers for comparisons, strings for equal/in/starts_with) and falls back to the
    operator's own predicate otherwise, so both paths decide exactly as the predicate
    does (the trace uses the predicate alone). Constants go in as literals (strings,
    ints, finite floats: their repr is a literal) or as parameters of the factory.
    """

    def __init__(self, limits: RegexLimits) -> None:
        self._limits = limits
        self._bound: dict[str, Any] = {"MISSING": MISSING, "NUMBER": (int, float), "EMPTY": {}}
        self._entities: dict[str, str] = {}
        self._leaves = 0

    def build(self, tree: dict) -> Test:
        body = self._node(tree)
        lookups = "".join(
            f"    {name} = facts.get({entity!r})\n    if type({name}) is not dict:\n      {name} = EMPTY\n"
            for entity, name in self._entities.items()
        )
        source = (
            f"def factory({', '.join(self._bound)}):\n"
            f"  def test(facts):\n{lookups}    return {body}\n"
            "  return test\n"
        )
        namespace: dict[str, Any] = {}
        exec(compile(source, "<condition>", "exec"), namespace)  # noqa: S102 - source built from a validated tree
        return namespace["factory"](**self._bound)

    def _bind(self, value: Any) -> str:
        name = f"k{len(self._bound)}"
        self._bound[name] = value
        return name

    def _node(self, tree: dict) -> str:
        if "fact" in tree:
            return self._leaf(tree)
        if "not" in tree:
            return f"(not {self._node(tree['not'])})"
        if "all" in tree:
            children = [self._node(child) for child in tree["all"]]
            return f"({' and '.join(children)})" if children else "True"
        children = [self._node(child) for child in tree["any"]]
        return f"({' or '.join(children)})" if children else "False"

    def _value(self, path: str) -> str:
        parts = path.split(".")
        if len(parts) == 1:
            return f"facts.get({path!r}, MISSING)"
        if len(parts) == 2:
            entity = self._entities.setdefault(parts[0], f"e{len(self._entities)}")
            return f"{entity}.get({parts[1]!r}, MISSING)"
        return f"{self._bind(fact_getter(path))}(facts)"

    def _leaf(self, leaf: dict) -> str:
        operator = OPERATORS[leaf["operator"]]
        predicate = operator.build(leaf["value"], self._limits)
        value, expected = self._value(leaf["fact"]), leaf["value"]
        v = f"v{self._leaves}"
        self._leaves += 1
        if operator.may_fail:
            return f"{self._bind(_guarded(predicate))}({value})"
        fallback = self._bind(predicate)
        name = operator.name
        if name in _INLINE_COMPARISONS and _is_literal_number(expected):
            return f"({v} {_INLINE_COMPARISONS[name]} {expected!r} if type({v} := {value}) in NUMBER else {fallback}({v}))"
        if name == "between" and all(_is_literal_number(bound) for bound in expected):
            low, high = expected
            return f"({low!r} <= {v} <= {high!r} if type({v} := {value}) in NUMBER else {fallback}({v}))"
        if name == "equal" and type(expected) is str:
            return f"(({v} := {value}) == {expected!r} and type({v}) is str)"
        if name == "in" and any(type(item) is str for item in expected):
            strings = self._bind(frozenset(item for item in expected if type(item) is str))
            return f"({v} in {strings} if type({v} := {value}) is str else {fallback}({v}))"
        if name == "starts_with":
            return f"(type({v} := {value}) is str and {v}.startswith({expected!r}))"
        return f"{fallback}({value})"


_INLINE_COMPARISONS = {
    "equal": "==",
    "less_than": "<",
    "less_than_inclusive": "<=",
    "greater_than": ">",
    "greater_than_inclusive": ">=",
}


def _is_literal_number(value: Any) -> bool:
    """An int or finite float: compared as is by the predicate, and its repr is a literal."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _guarded(predicate: Callable[[Any], bool]) -> Test:
    def guarded(actual: Any) -> bool:
        try:
            return predicate(actual)
        except OperatorError:
            return False

    return guarded


def _trace(tree: dict, facts: Facts, limits: RegexLimits, built: dict[int, Any]) -> ConditionTrace:
    if "fact" in tree:
        key = id(tree)
        if key not in built:
            built[key] = OPERATORS[tree["operator"]].build(tree["value"], limits)
        actual = fact_getter(tree["fact"])(facts)
        present = actual is not MISSING
        try:
            passed, error = built[key](actual), ""
        except OperatorError as failure:
            passed, error = False, str(failure)
        return ConditionTrace(
            operator=tree["operator"],
            passed=passed,
            fact=tree["fact"],
            expected=tree["value"],
            actual=actual if present else None,
            fact_present=present,
            error=error,
        )
    if "not" in tree:
        inner = _trace(tree["not"], facts, limits, built)
        return ConditionTrace(operator="not", passed=not inner.passed, children=[inner])
    key = "all" if "all" in tree else "any"
    children = [_trace(child, facts, limits, built) for child in tree[key]]
    passed = all(c.passed for c in children) if key == "all" else any(c.passed for c in children)
    return ConditionTrace(operator=key, passed=passed, children=children)
