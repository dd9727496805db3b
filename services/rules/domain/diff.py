"""A structured diff between two versions of a rule: one change per leaf value that differs.

Paths read as users write them: `actions[1].params.job`, `conditions.all[0].value`.
Lists are compared position by position (an inserted action shows as changes from
there on plus an addition at the end: simple, and exact about what each position holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    kind: str
    before: Any = None
    after: Any = None


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    _walk("", before, after, changes)
    return changes


def _walk(path: str, before: Any, after: Any, changes: list[Change]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            _walk(f"{path}.{key}" if path else key, before.get(key, _ABSENT), after.get(key, _ABSENT), changes)
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            old = before[index] if index < len(before) else _ABSENT
            new = after[index] if index < len(after) else _ABSENT
            _walk(f"{path}[{index}]", old, new, changes)
    elif before is _ABSENT:
        changes.append(Change(path, ADDED, after=after))
    elif after is _ABSENT:
        changes.append(Change(path, REMOVED, before=before))
    elif before != after or type(before) is not type(after):
        changes.append(Change(path, CHANGED, before, after))
