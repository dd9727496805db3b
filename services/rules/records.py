"""Typed records that cross the store boundary: what the store hands to the use cases and servicer.

Rows stay inside the store; everything above it reads attributes of these frozen
dataclasses, so a renamed column fails at one place (the store's `from_row`) rather
than wherever a `row["..."]` happened to read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_id: str
    type: str
    source: str
    occurred_time: datetime
    data: dict[str, Any]
    seq: int = 0
    attempts: int = 0
    trace_parent: str = ""


@dataclass(frozen=True, slots=True)
class LiveExecution:
    """What the live rule did for one event (replay compares with it)."""

    execution_id: str
    status: str
    actions: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """A stored event, with the live rule's execution of it when there was one."""

    event: StoredEvent
    live: LiveExecution | None
