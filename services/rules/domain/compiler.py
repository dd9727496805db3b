"""The condition compiler: a typed condition tree becomes the source of one Python function.

Why generate source: evaluating a tree node by node (a closure per leaf, a call per
node) costs several calls per leaf; the benchmark (`rules.evaluate`) showed the
generated function at 3-4x the speed of closures and within about a third of
hand-written Python. How, in four steps:

    nodes (Leaf/All/AnyOf/Not/Table)                      domain/nodes.py
        │  expression(): one inline expression per node
        ▼
    "(e0.get('status', MISSING) == 'placed' and ...)"     entity dicts looked up once
        │  function(): wrap in  def factory(k0, k1, ...): def test(facts): ...
        ▼
    exec(compile(source)) once per (rule, version)        constants bound as factory
        │                                                 parameters, never spliced
        ▼                                                 into source unless literal
    test(facts) -> bool          the hot path; a table adds hits(facts) -> [row indexes]

Each leaf's inline fast path covers the common actual types (numbers for comparisons,
strings for equal/in/starts_with) and falls back to the operator's own predicate for
anything else, so both paths decide exactly as the predicate does; the tracer uses the
predicate alone. Only validated trees reach the compiler: fact paths match a strict
pattern, and every other constant is a literal (str, int, finite float: their repr
is Python source) or a bound parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from services.rules.domain.nodes import All, AnyOf, Leaf, Node, Not, Table
from services.rules.domain.operators import (
    MISSING,
    OPERATORS,
    OperatorError,
    RegexLimits,
)

Facts = dict[str, Any]

_INLINE_COMPARISONS = {
    "equal": "==",
    "less_than": "<",
    "less_than_inclusive": "<=",
    "greater_than": ">",
    "greater_than_inclusive": ">=",
}


def fact_source(path: str, entities: dict[str, str], bind: Callable[[Any], str], getter: Callable[[str], Any]) -> str:
    parts = path.split(".")
    if len(parts) == 1:
        return f"facts.get({path!r}, MISSING)"
    if len(parts) == 2:
        entity = entities.setdefault(parts[0], f"e{len(entities)}")
        return f"{entity}.get({parts[1]!r}, MISSING)"
    return f"{bind(getter(path))}(facts)"


class SourceBuilder:
    """Builds the functions of one condition; see the module docstring."""

    def __init__(self, limits: RegexLimits, getter: Callable[[str], Any], *, single_hit_proven: bool = False) -> None:
        # Set when the save-time check proved that no two rows of the table can match together
        # (with different outputs, for ANY): "yields a result" is then simply "any row matches".
        self._limits, self._getter, self._single_hit_proven = limits, getter, single_hit_proven
        self._bound: dict[str, Any] = {"MISSING": MISSING, "NUMBER": (int, float), "EMPTY": {}}
        self._entities: dict[str, str] = {}
        self._leaves = 0

    def function(self, body: str) -> Callable[[Facts], Any]:
        """A function of `facts` returning `body`, with every entity it reads looked up once."""
        lookups = "".join(
            f"    {name} = facts.get({entity!r})\n    if type({name}) is not dict:\n      {name} = EMPTY\n"
            for entity, name in self._entities.items()
        )
        source = f"def factory({', '.join(self._bound)}):\n  def test(facts):\n{lookups}    return {body}\n  return test\n"
        namespace: dict[str, Any] = {}
        exec(compile(source, "<condition>", "exec"), namespace)  # noqa: S102 - source built from a validated tree
        return namespace["factory"](**self._bound)

    def hits(self, table: Table) -> Callable[[Facts], list[int]]:
        """A function returning the indexes of the table's matching rows, in table order."""
        rows = ", ".join(self.expression(row.test) for row in table.rows)
        # A helper, not a comprehension: the rows' `:=` may not sit in a comprehension's iterable.
        return self.function(f"{self.bind(_indexes)}(({rows},))")

    def bind(self, value: Any) -> str:
        name = f"k{len(self._bound)}"
        self._bound[name] = value
        return name

    def expression(self, node: Node) -> str:
        if isinstance(node, Leaf):
            return self._leaf(node)
        if isinstance(node, Not):
            return f"(not {self.expression(node.child)})"
        if isinstance(node, All):
            return f"({' and '.join(map(self.expression, node.children))})" if node.children else "True"
        if isinstance(node, AnyOf):
            return f"({' or '.join(map(self.expression, node.children))})" if node.children else "False"
        return self._table(node)

    def _table(self, table: Table) -> str:
        """True when the hit policy yields a result (every row's expression is a bool)."""
        rows = [self.expression(row.test) for row in table.rows]
        if self._single_hit_proven:
            return f"({' or '.join(rows)})"
        if table.hit_policy == "UNIQUE":
            return f"({' + '.join(rows)} == 1)"
        if table.hit_policy == "ANY":
            groups: dict[str, int] = {}
            group_of = tuple(groups.setdefault(repr(sorted(row.outputs.items())), len(groups)) for row in table.rows)
            return f"{self.bind(_agreeing(group_of))}(({', '.join(rows)},))"
        return f"({' or '.join(rows)})"

    def _leaf(self, leaf: Leaf) -> str:
        operator = OPERATORS[leaf.operator]
        predicate = operator.build(leaf.value, self._limits)
        value = fact_source(leaf.fact, self._entities, self.bind, self._getter)
        expected = leaf.value
        v = f"v{self._leaves}"
        self._leaves += 1
        if operator.may_fail:
            return f"{self.bind(_guarded(predicate))}({value})"
        fallback = self.bind(predicate)
        name = operator.name
        if name in _INLINE_COMPARISONS and _is_literal_number(expected):
            return f"({v} {_INLINE_COMPARISONS[name]} {expected!r} if type({v} := {value}) in NUMBER else {fallback}({v}))"
        if name == "between" and all(_is_literal_number(bound) for bound in expected):
            low, high = expected
            return f"({low!r} <= {v} <= {high!r} if type({v} := {value}) in NUMBER else {fallback}({v}))"
        if name == "equal" and type(expected) is str:
            return f"(({v} := {value}) == {expected!r} and type({v}) is str)"
        if name == "in" and any(type(item) is str for item in expected):
            strings = self.bind(frozenset(item for item in expected if type(item) is str))
            return f"({v} in {strings} if type({v} := {value}) is str else {fallback}({v}))"
        if name == "starts_with":
            return f"(type({v} := {value}) is str and {v}.startswith({expected!r}))"
        return f"{fallback}({value})"


def _indexes(hits: tuple[bool, ...]) -> list[int]:
    return [i for i, hit in enumerate(hits) if hit]


def _agreeing(group_of: tuple[int, ...]) -> Callable[[tuple[bool, ...]], bool]:
    """ANY tables: at least one row hits, and every hit row has the same outputs."""

    def agreeing(hits: tuple[bool, ...]) -> bool:
        found = {group_of[i] for i, hit in enumerate(hits) if hit}
        return len(found) == 1

    return agreeing


def _is_literal_number(value: Any) -> bool:
    """An int or finite float: compared as is by the predicate, and its repr is a literal."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _guarded(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def guarded(actual: Any) -> bool:
        try:
            return predicate(actual)
        except OperatorError:
            return False

    return guarded
