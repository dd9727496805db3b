"""Loop and runaway guards: rule opt-in and rate limit, circuit-breaker state, causation on executions.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "rules"


def upgrade() -> None:
    op.add_column("rules", sa.Column("triggered_by_rules", sa.Boolean, nullable=False, server_default="false"), schema=SCHEMA)
    op.add_column("rules", sa.Column("max_executions_per_minute", sa.Integer, nullable=False, server_default="0"), schema=SCHEMA)
    op.add_column("rules", sa.Column("deactivated_reason", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.add_column("executions", sa.Column("causation", JSONB, nullable=False, server_default="[]"), schema=SCHEMA)
    op.add_column("executions", sa.Column("refused_reason", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    # The rate limit counts a rule's executions of the last minute; the breaker reads its latest ones.
    op.create_index("executions_by_rule_recent", "executions", ["rule_id", sa.text("start_time DESC")], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("executions_by_rule_recent", "executions", schema=SCHEMA)
    for column in ("causation", "refused_reason"):
        op.drop_column("executions", column, schema=SCHEMA)
    for column in ("triggered_by_rules", "max_executions_per_minute", "deactivated_reason"):
        op.drop_column("rules", column, schema=SCHEMA)
