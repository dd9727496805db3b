"""The rules schema: its tables (SQLAlchemy Core), and the helpers every store module shares."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.sql.elements import ColumnElement

from libs.idempotency import idempotency_table
from services.rules.domain.rules import DEFINITION_FIELDS

metadata = MetaData(schema="rules")
idempotency_keys = idempotency_table(metadata)

rules = Table(
    "rules",
    metadata,
    Column("rule_id", UUID(as_uuid=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("type", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("event_types", ARRAY(Text), nullable=False),
    Column("conditions", JSONB, nullable=False),
    Column("actions", JSONB, nullable=False),
    Column("stop_processing", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_by", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("delete_time", DateTime(timezone=True)),
    Column("triggered_by_rules", Boolean, nullable=False, server_default="false"),
    Column("max_executions_per_minute", Integer, nullable=False, server_default="0"),
    # Why the rule was deactivated by the service itself (the circuit breaker); '' otherwise.
    Column("deactivated_reason", Text, nullable=False, server_default=""),
    Index("rules_active_by_priority", text("priority DESC"), "rule_id", postgresql_where=text("active AND delete_time IS NULL")),
)

rule_versions = Table(
    "rule_versions",
    metadata,
    Column("rule_id", UUID(as_uuid=False), nullable=False),
    Column("version", Integer, nullable=False),
    # The whole rule as it was at this version (definition and state).
    Column("snapshot", JSONB, nullable=False),
    Column("changed_by", Text, nullable=False),
    Column("change_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("rule_id", "version"),
    ForeignKeyConstraint(["rule_id"], ["rules.rules.rule_id"]),
)

events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("occurred_time", DateTime(timezone=True), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("received_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("evaluated_time", DateTime(timezone=True)),
    Column("lease_until", DateTime(timezone=True)),
    # The process holding the lease (its token): only it may renew the lease.
    Column("lease_owner", UUID(as_uuid=False)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("trace_parent", Text, nullable=False, server_default=""),
    Index("events_pending", "seq", postgresql_where=text("evaluated_time IS NULL")),
    Index("events_occurred", "occurred_time"),
    Index("events_by_type_recent", "type", text("seq DESC")),
)

executions = Table(
    "executions",
    metadata,
    Column("execution_id", UUID(as_uuid=False), primary_key=True),
    Column("rule_id", UUID(as_uuid=False), nullable=False),
    Column("rule_version", Integer, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("status", Text, nullable=False),
    # [{index, type, params (rendered), status, error, attempts, duration_ms}]
    Column("actions", JSONB, nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finish_time", DateTime(timezone=True)),
    Column("lease_until", DateTime(timezone=True)),
    Column("lease_owner", UUID(as_uuid=False)),
    # The event's causation chain (see domain/guards.py), and why a guard refused the run.
    Column("causation", JSONB, nullable=False, server_default="[]"),
    Column("refused_reason", Text, nullable=False, server_default=""),
    UniqueConstraint("rule_id", "event_id", name="executions_one_per_rule_and_event"),
    Index("executions_running", "lease_until", postgresql_where=text("status = 'running'")),
    Index("executions_recent", text("start_time DESC"), "execution_id"),
    Index("executions_by_event", "event_id"),
    Index("executions_by_rule_recent", "rule_id", text("start_time DESC")),
)

notifications = Table(
    "notifications",
    metadata,
    Column("notification_id", UUID(as_uuid=False), primary_key=True),
    Column("execution_id", UUID(as_uuid=False), nullable=False),
    Column("action_index", Integer, nullable=False),
    Column("rule_id", UUID(as_uuid=False), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text, nullable=False, server_default=""),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_time", DateTime(timezone=True)),
    # email (sent over SMTP to `recipient`) or inbox (shown to a user or to everyone of a role).
    Column("channel", Text, nullable=False, server_default="email"),
    Column("recipient_user", Text, nullable=False, server_default=""),
    Column("recipient_role", Text, nullable=False, server_default=""),
    UniqueConstraint("execution_id", "action_index", name="notifications_one_per_action"),
    Index("notifications_recent", text("create_time DESC"), "notification_id"),
    Index(
        "notifications_inbox",
        "recipient_user",
        "recipient_role",
        text("create_time DESC"),
        postgresql_where=text("channel = 'inbox'"),
    ),
)

notification_reads = Table(
    "notification_reads",
    metadata,
    Column("notification_id", UUID(as_uuid=False), nullable=False),
    Column("reader", Text, nullable=False),
    Column("read_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("notification_id", "reader"),
)

waits = Table(
    "waits",
    metadata,
    Column("wait_id", UUID(as_uuid=False), primary_key=True),
    Column("execution_id", UUID(as_uuid=False), nullable=False),
    Column("action_index", Integer, nullable=False),
    Column("rule_id", UUID(as_uuid=False), nullable=False),
    Column("rule_version", Integer, nullable=False),
    Column("event_id", Text, nullable=False),
    # The condition tree re-checked when due (the wait's own, or its rule version's).
    Column("conditions", JSONB, nullable=False),
    Column("due_time", DateTime(timezone=True), nullable=False),
    # waiting -> resumed | cancelled
    Column("status", Text, nullable=False),
    Column("lease_until", DateTime(timezone=True)),
    Column("lease_owner", UUID(as_uuid=False)),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finish_time", DateTime(timezone=True)),
    UniqueConstraint("execution_id", "action_index", name="waits_one_per_action"),
    Index("waits_due", "due_time", postgresql_where=text("status = 'waiting'")),
    Index("waits_recent", text("create_time DESC"), "wait_id"),
)

LAST_EXECUTION = (
    select(executions.c.status, executions.c.start_time)
    .where(executions.c.rule_id == rules.c.rule_id)
    .order_by(executions.c.start_time.desc())
    .limit(1)
    .lateral("last_execution")
)
RULE_COLUMNS = (
    *rules.c,
    LAST_EXECUTION.c.status.label("last_execution_status"),
    LAST_EXECUTION.c.start_time.label("last_execution_time"),
)


def rules_query():
    return select(*RULE_COLUMNS).select_from(rules.outerjoin(LAST_EXECUTION, text("true")))





R = TypeVar("R")


def record(kind: type[R], row: Any) -> R:
    """The typed record of a row (a mapping with at least the record's required fields)."""
    return kind(**{f.name: row[f.name] for f in fields(kind) if f.name in row})  # type: ignore[arg-type]


def definition_snapshot(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in DEFINITION_FIELDS}




def before(time_column: Column, id_column: Column, cursor: list) -> ColumnElement[bool]:
    """Rows after the cursor [time, id] in (time, id) descending order. The bound values carry
    the columns' types: a bare string would be VARCHAR, and uuid < varchar has no operator."""
    bound = tuple_(literal(datetime.fromisoformat(cursor[0]), time_column.type), literal(cursor[1], id_column.type))
    return tuple_(time_column, id_column) < bound



def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
