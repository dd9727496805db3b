"""Typed records that cross the store boundary: what the store hands to the use cases and servicer.

Rows stay inside the store; everything above it reads attributes of these frozen
dataclasses, so a renamed column fails at one place (the store's `from_row`) rather
than wherever a `row["..."]` happened to read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.rules.domain.rules import DEFINITION_FIELDS, RuleDefinition


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A received event (or one to evaluate now, not stored yet: seq 0)."""

    event_id: str
    type: str
    source: str
    occurred_time: datetime
    data: dict[str, Any]
    seq: int = 0
    attempts: int = 0
    trace_parent: str = ""
    evaluated_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """A rule at its latest version (or as it was at a version, in a version listing)."""

    rule_id: str
    name: str
    type: str
    description: str
    active: bool
    priority: int
    event_types: list[str]
    conditions: Any
    actions: list[dict[str, Any]]
    stop_processing: bool
    version: int
    created_by: str
    updated_by: str
    create_time: datetime
    update_time: datetime
    triggered_by_rules: bool = False
    max_executions_per_minute: int = 0
    deactivated_reason: str = ""
    # The latest execution's, for dashboards (none in version listings).
    last_execution_status: str | None = None
    last_execution_time: datetime | None = None

    def definition(self) -> RuleDefinition:
        return RuleDefinition(**{name: getattr(self, name) for name in DEFINITION_FIELDS})


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One run of one rule for one event; `actions` holds each action's progress
    ({index, type, params (rendered), status, error, attempts, duration_ms})."""

    execution_id: str
    rule_id: str
    rule_version: int
    event_id: str
    event_type: str
    status: str
    actions: list[dict[str, Any]]
    start_time: datetime
    finish_time: datetime | None = None
    causation: list[dict[str, str]] = field(default_factory=list)
    refused_reason: str = ""


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """An e-mail or inbox notification; `read_time` is the reader's in inbox answers."""

    notification_id: str
    execution_id: str
    action_index: int
    rule_id: str
    event_id: str
    recipient: str
    subject: str
    body: str
    status: str
    attempts: int
    error: str
    create_time: datetime
    sent_time: datetime | None = None
    channel: str = "email"
    recipient_user: str = ""
    recipient_role: str = ""
    read_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class WaitRecord:
    """An execution paused at a wait action."""

    wait_id: str
    execution_id: str
    action_index: int
    rule_id: str
    rule_version: int
    event_id: str
    conditions: Any
    due_time: datetime
    status: str
    create_time: datetime
    finish_time: datetime | None = None


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
