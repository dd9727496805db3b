"""Decision tables: DMN hit policies, validation on save, and the overlap and gap checks.

A table is a condition node: {"table": {"hit_policy", "aggregation", "inputs",
"outputs", "rules"}}. Inputs are fact paths; each rule has one cell per input in the
compact form ("> 10", ["a", "b"], {"min": 1, "max": 5}, a literal; "-" or null for
any value) and an output entry per output. The table matches when its hit policy
yields a result; that result is the rule's `decision.<output>` facts, which the
actions' templates may use.

Hit policies (DMN 1.3, section 8.2.11):
- UNIQUE: at most one row may match; two or more is an error (no match).
- ANY: rows may overlap when their outputs agree; disagreeing matches are an error.
- FIRST: the first matching row in table order.
- PRIORITY: the matching row whose outputs rank highest in the outputs' priority
  lists (first output first); rows of equal rank: the first in table order.
- COLLECT: every matching row's outputs, as lists in table order; with an
  aggregation (single output only) SUM, MIN, MAX of the values or COUNT of them.

Overlaps and gaps are found by sampling: each input column contributes the values its
cells mention and the points between and beyond them (plus one string no cell names),
and every combination is tried against every row. That is exact for the comparison,
range, equality and membership operators; a column using another operator (regex,
prefix, contains) makes the table uncheckable, and it is then only checked at run time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.rules.domain.nodes import Table
from services.rules.domain.operators import RegexLimits, as_number

HIT_POLICIES = ("UNIQUE", "ANY", "FIRST", "PRIORITY", "COLLECT")
AGGREGATIONS = ("SUM", "MIN", "MAX", "COUNT")
MAX_ROWS = 500
MAX_SAMPLES = 20_000
ANY_VALUE = ("-", "", None)
_CHECKABLE = frozenset(
    {
        "equal",
        "not_equal",
        "in",
        "not_in",
        "less_than",
        "less_than_inclusive",
        "greater_than",
        "greater_than_inclusive",
        "between",
    }
)
_OTHER = "\x00another value"


class TableError(Exception):
    """The hit policy has no single answer for these facts (UNIQUE or ANY violated)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a table decided: the rows that matched, the ones the policy chose, and the outputs."""

    hits: tuple[int, ...]
    chosen: tuple[int, ...]
    outputs: dict[str, Any] | None
    error: str = ""


def decide(table: Table, hits: list[int]) -> Decision:
    """Applies the table's hit policy to the indexes of its matching rows (in table order)."""
    try:
        chosen, outputs = _apply(table, hits)
    except TableError as error:
        return Decision(tuple(hits), (), None, str(error))
    return Decision(tuple(hits), tuple(chosen), outputs)


def _apply(table: Table, hits: list[int]) -> tuple[list[int], dict[str, Any] | None]:
    if not hits:
        return [], None
    rows, policy = table.rows, table.hit_policy
    if policy == "UNIQUE":
        if len(hits) > 1:
            raise TableError(f"UNIQUE table: rows {_numbers(hits)} all match")
        return hits, dict(rows[hits[0]].outputs)
    if policy == "ANY":
        if any(rows[i].outputs != rows[hits[0]].outputs for i in hits):
            raise TableError(f"ANY table: rows {_numbers(hits)} match with different outputs")
        return hits[:1], dict(rows[hits[0]].outputs)
    if policy == "FIRST":
        return hits[:1], dict(rows[hits[0]].outputs)
    if policy == "PRIORITY":
        best = min(hits, key=lambda i: _rank(table, i))  # min is stable: ties go to table order
        return [best], dict(rows[best].outputs)
    values = {o.name: [rows[i].outputs[o.name] for i in hits] for o in table.outputs}
    if table.aggregation is None:
        return hits, values
    (name,) = values
    return hits, {name: _aggregate(table.aggregation, values[name])}


def _rank(table: Table, row: int) -> tuple[int, ...]:
    outputs = table.rows[row].outputs
    return tuple(
        o.priorities.index(outputs[o.name]) if outputs[o.name] in o.priorities else len(o.priorities)
        for o in table.outputs
    )


def _aggregate(aggregation: str, values: list[Any]) -> Any:
    if aggregation == "COUNT":
        return len(values)
    present = [as_number(v) for v in values]
    numbers: list[int | float] = [float(n) if type(n) is not int else n for n in present if n is not None]
    if aggregation == "SUM":
        return sum(numbers)
    return (min if aggregation == "MIN" else max)(numbers) if numbers else None


def _numbers(rows: list[int]) -> str:
    return ", ".join(str(i + 1) for i in rows)


# --- checks on save ---------------------------------------------------------------------


@dataclass(frozen=True)
class Findings:
    """Rows that overlap (pairs of row indexes with an example) and uncovered input combinations."""

    overlaps: list[tuple[int, int, dict[str, Any]]]
    gaps: list[dict[str, Any]]
    checked: bool


def check(table: Table, hits_of: Callable[[dict], list[int]], limit_examples: int = 3) -> Findings:
    """Overlapping rows and gaps, found by trying every sample combination against every row."""
    columns = []
    for column in range(len(table.inputs)):
        cells = [row.cells[column] for row in table.rows]
        if any(cell is not None and cell.operator not in _CHECKABLE for cell in cells):
            return Findings([], [], checked=False)
        columns.append(_samples([cell.value for cell in cells if cell is not None]))
    if _product_size(columns) > MAX_SAMPLES:
        return Findings([], [], checked=False)
    overlaps: dict[tuple[int, int], dict[str, Any]] = {}
    gaps: list[dict[str, Any]] = []
    for combination in itertools.product(*columns):
        example = dict(zip(table.inputs, combination, strict=True))
        facts = _facts(example)
        hits = hits_of(facts)
        if not hits and len(gaps) < limit_examples:
            gaps.append(example)
        for pair in itertools.combinations(hits, 2):
            overlaps.setdefault(pair, example)
    return Findings([(a, b, example) for (a, b), example in sorted(overlaps.items())], gaps, checked=True)


def _samples(values: list[Any]) -> list[Any]:
    numbers: set[Any] = set()
    strings: set[str] = set()
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            number = as_number(item)
            if number is not None and type(item) is not bool:
                numbers.add(number)
            elif type(item) is str:
                strings.add(item)
    points = sorted(numbers)
    samples: list[Any] = []
    if points:
        samples.append(points[0] - 1)
        for low, high in itertools.pairwise(points):
            samples += [low, (low + high) / 2]
        samples += [points[-1], points[-1] + 1]
        samples = [int(s) if float(s).is_integer() else float(s) for s in samples]
    samples += sorted(strings)
    if strings or not points:
        samples.append(_OTHER)
    return samples


def _product_size(columns: list[list[Any]]) -> int:
    size = 1
    for column in columns:
        size *= len(column)
    return size


def _facts(example: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for path, value in example.items():
        *parents, name = path.split(".")
        target = facts
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = value
    return facts


def shown(example: dict[str, Any]) -> str:
    """An example input combination as users read it."""
    return ", ".join(f"{path}={'(another value)' if value == _OTHER else value!r}" for path, value in example.items())


# --- validation ----------------------------------------------------------------------------


def normalise_table(
    raw: Any, where: str, problems: list[tuple[str, str]], cell: Callable[[str, Any, str], dict | None], limits: RegexLimits
) -> dict:
    """The stored form of a table; problems as (field, description). `cell` normalises one cell."""
    if not isinstance(raw, dict):
        problems.append((where, "a table is an object: hit_policy, inputs, outputs, rules"))
        return _EMPTY
    unknown = set(raw) - {"hit_policy", "aggregation", "inputs", "outputs", "rules"}
    if unknown:
        problems.append((where, f"unknown keys {sorted(unknown)}; use hit_policy, aggregation, inputs, outputs, rules"))
    policy = str(raw.get("hit_policy") or "UNIQUE").upper()
    if policy not in HIT_POLICIES:
        problems.append((f"{where}.hit_policy", f"one of {', '.join(HIT_POLICIES)}"))
    aggregation = raw.get("aggregation")
    aggregation = str(aggregation).upper() if aggregation else None
    inputs = [i.get("fact") if isinstance(i, dict) else i for i in _list(raw.get("inputs"), f"{where}.inputs", problems)]
    outputs = [
        _output(o, f"{where}.outputs[{i}]", problems)
        for i, o in enumerate(_list(raw.get("outputs"), f"{where}.outputs", problems))
    ]
    names = [o["name"] for o in outputs]
    if len(set(names)) != len(names):
        problems.append((f"{where}.outputs", "output names must differ"))
    if aggregation is not None:
        if policy != "COLLECT" or aggregation not in AGGREGATIONS:
            problems.append((f"{where}.aggregation", f"only with COLLECT: one of {', '.join(AGGREGATIONS)}"))
        elif len(outputs) != 1:
            problems.append((f"{where}.aggregation", "an aggregated table has exactly one output"))
    if policy == "PRIORITY" and not any(o["priorities"] for o in outputs):
        problems.append(
            (f"{where}.outputs", "a PRIORITY table lists its outputs' values, highest priority first, in `priorities`")
        )
    rows_raw = _list(raw.get("rules"), f"{where}.rules", problems)
    if len(rows_raw) > MAX_ROWS:
        problems.append((f"{where}.rules", f"at most {MAX_ROWS} rules"))
    rows = [_row(r, f"{where}.rules[{i}]", inputs, outputs, aggregation, problems, cell) for i, r in enumerate(rows_raw)]
    table = {"hit_policy": policy, "inputs": inputs, "outputs": outputs, "rules": rows}
    if aggregation:
        table["aggregation"] = aggregation
    return {"table": table}


_EMPTY = {"table": {"hit_policy": "UNIQUE", "inputs": [], "outputs": [], "rules": []}}


def _list(value: Any, where: str, problems: list[tuple[str, str]]) -> list:
    if not isinstance(value, list) or not value:
        problems.append((where, "a non-empty list"))
        return []
    return value


def _output(raw: Any, where: str, problems: list[tuple[str, str]]) -> dict:
    name = raw.get("name") if isinstance(raw, dict) else raw
    if not isinstance(name, str) or not name.isidentifier() or not name.islower():
        problems.append((where, "an output name: lowercase letters, digits and _"))
        name = str(name)
    priorities = raw.get("priorities") if isinstance(raw, dict) else None
    if priorities is not None and (not isinstance(priorities, list) or any(isinstance(v, dict | list) for v in priorities)):
        problems.append((f"{where}.priorities", "a list of values, highest priority first"))
        priorities = None
    return {"name": name, "priorities": priorities or []}


def _row(
    raw: Any,
    where: str,
    inputs: list,
    outputs: list[dict],
    aggregation: str | None,
    problems: list[tuple[str, str]],
    cell: Callable[[str, Any, str], dict | None],
) -> dict:
    if not isinstance(raw, dict) or set(raw) != {"when", "then"}:
        problems.append((where, 'a rule is {"when": [a cell per input], "then": {output: value}}'))
        return {"when": [None] * len(inputs), "then": {}}
    when = raw["when"] if isinstance(raw["when"], list) else []
    if len(when) != len(inputs):
        problems.append((f"{where}.when", f"one cell per input: {len(inputs)}"))
        when = (when + [None] * len(inputs))[: len(inputs)]
    cells = [
        None if value in ANY_VALUE else cell(str(fact), value, f"{where}.when[{i}]")
        for i, (fact, value) in enumerate(zip(inputs, when, strict=True))
    ]
    then = raw["then"]
    if isinstance(then, list) and len(then) == len(outputs):
        then = {o["name"]: value for o, value in zip(outputs, then, strict=True)}
    if not isinstance(then, dict) or set(then) != {o["name"] for o in outputs}:
        problems.append((f"{where}.then", f"a value for each output: {', '.join(o['name'] for o in outputs)}"))
        then = {}
    for o in outputs:
        value = then.get(o["name"])
        if isinstance(value, dict | list):
            problems.append((f"{where}.then.{o['name']}", "a single value"))
        elif o["priorities"] and o["name"] in then and value not in o["priorities"]:
            problems.append((f"{where}.then.{o['name']}", f"one of the output's priorities: {o['priorities']}"))
        elif aggregation in ("SUM", "MIN", "MAX") and o["name"] in then and (as_number(value) is None or type(value) is bool):
            problems.append((f"{where}.then.{o['name']}", f"a number ({aggregation} aggregates numbers)"))
    return {"when": cells, "then": then}

