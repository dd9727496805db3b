"""Typed nodes of a validated condition tree: what the compiler and the tracer walk.

The stored form stays JSON (it is what users write and what versions snapshot);
`from_tree` turns a validated tree into these frozen nodes once per (rule, version),
so the code generator dispatches on a type instead of probing dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Leaf:
    fact: str
    operator: str
    value: Any


@dataclass(frozen=True, slots=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    # PRIORITY tables: the output's values, highest priority first.
    priorities: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    """One table rule: a cell per input (None: any value) and its output entries."""

    cells: tuple[Leaf | None, ...]
    outputs: dict[str, Any]

    @property
    def test(self) -> All:
        """The row as a condition: every non-empty cell holds."""
        return All(tuple(cell for cell in self.cells if cell is not None))


@dataclass(frozen=True, slots=True)
class Table:
    """A DMN decision table: it matches when its hit policy yields a result."""

    hit_policy: str
    aggregation: str | None
    inputs: tuple[str, ...]
    outputs: tuple[Output, ...]
    rows: tuple[Row, ...]


Node = Leaf | All | AnyOf | Not | Table


def from_tree(tree: dict) -> Node:
    """The typed form of a validated (normalised) tree."""
    if "fact" in tree:
        return Leaf(tree["fact"], tree["operator"], tree["value"])
    if "not" in tree:
        return Not(from_tree(tree["not"]))
    if "all" in tree:
        return All(tuple(from_tree(child) for child in tree["all"]))
    if "any" in tree:
        return AnyOf(tuple(from_tree(child) for child in tree["any"]))
    table = tree["table"]
    inputs = tuple(table["inputs"])
    return Table(
        hit_policy=table["hit_policy"],
        aggregation=table.get("aggregation"),
        inputs=inputs,
        outputs=tuple(Output(o["name"], tuple(o.get("priorities") or ())) for o in table["outputs"]),
        rows=tuple(
            Row(
                tuple(
                    None if cell is None else Leaf(fact, cell["operator"], cell["value"])
                    for fact, cell in zip(inputs, row["when"], strict=True)
                ),
                dict(row["then"]),
            )
            for row in table["rules"]
        ),
    )


def tables(node: Node) -> list[Table]:
    """Every table in a tree (validation admits at most one)."""
    if isinstance(node, Table):
        return [node]
    if isinstance(node, Not):
        return tables(node.child)
    if isinstance(node, All | AnyOf):
        return [table for child in node.children for table in tables(child)]
    return []


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, Not):
        return leaves(node.child)
    if isinstance(node, Table):
        return [cell for row in node.rows for cell in row.cells if cell is not None]
    return [leaf for child in node.children for leaf in leaves(child)]
