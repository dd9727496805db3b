"""Durable waits: an execution paused by a `wait` action until its due time.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "rules"


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "waits",
        sa.Column("wait_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("execution_id", UUID(as_uuid=False), nullable=False),
        sa.Column("action_index", sa.Integer, nullable=False),
        sa.Column("rule_id", UUID(as_uuid=False), nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("conditions", JSONB, nullable=False),
        sa.Column("due_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("finish_time", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("execution_id", "action_index", name="waits_one_per_action"),
        schema=SCHEMA,
    )
    op.create_index("waits_due", "waits", ["due_time"], schema=SCHEMA, postgresql_where=sa.text("status = 'waiting'"))
    op.create_index("waits_recent", "waits", [sa.text("create_time DESC"), "wait_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("waits", schema=SCHEMA)
