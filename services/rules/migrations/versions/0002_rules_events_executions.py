"""Rules with versions, received events, executions (one per rule and event), notifications.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "rules"


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "rules",
        sa.Column("rule_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("event_types", ARRAY(sa.Text), nullable=False),
        sa.Column("conditions", JSONB, nullable=False),
        sa.Column("actions", JSONB, nullable=False),
        sa.Column("stop_processing", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("delete_time", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_index(
        "rules_active_by_priority",
        "rules",
        [sa.text("priority DESC"), "rule_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("active AND delete_time IS NULL"),
    )
    op.create_table(
        "rule_versions",
        sa.Column("rule_id", UUID(as_uuid=False), sa.ForeignKey(f"{SCHEMA}.rules.rule_id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("snapshot", JSONB, nullable=False),
        sa.Column("changed_by", sa.Text, nullable=False),
        sa.Column("change_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.PrimaryKeyConstraint("rule_id", "version"),
        schema=SCHEMA,
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("occurred_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("received_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("evaluated_time", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        schema=SCHEMA,
    )
    op.create_index("events_pending", "events", ["seq"], schema=SCHEMA, postgresql_where=sa.text("evaluated_time IS NULL"))
    op.create_index("events_occurred", "events", ["occurred_time"], schema=SCHEMA)
    op.create_table(
        "executions",
        sa.Column("execution_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("rule_id", UUID(as_uuid=False), nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("actions", JSONB, nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("finish_time", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("rule_id", "event_id", name="executions_one_per_rule_and_event"),
        schema=SCHEMA,
    )
    op.create_index(
        "executions_running", "executions", ["lease_until"], schema=SCHEMA, postgresql_where=sa.text("status = 'running'")
    )
    op.create_index("executions_recent", "executions", [sa.text("start_time DESC"), "execution_id"], schema=SCHEMA)
    op.create_index("executions_by_event", "executions", ["event_id"], schema=SCHEMA)
    op.create_table(
        "notifications",
        sa.Column("notification_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("execution_id", UUID(as_uuid=False), nullable=False),
        sa.Column("action_index", sa.Integer, nullable=False),
        sa.Column("rule_id", UUID(as_uuid=False), nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("sent_time", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("execution_id", "action_index", name="notifications_one_per_action"),
        schema=SCHEMA,
    )
    op.create_index("notifications_recent", "notifications", [sa.text("create_time DESC"), "notification_id"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("notifications", "executions", "events", "rule_versions", "rules"):
        op.drop_table(table, schema=SCHEMA)
