"""Notifications people can watch: addressed to a user or a role, read state per reader.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "rules"


def upgrade() -> None:
    op.add_column("notifications", sa.Column("channel", sa.Text, nullable=False, server_default="email"), schema=SCHEMA)
    op.add_column("notifications", sa.Column("recipient_user", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.add_column("notifications", sa.Column("recipient_role", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.create_index(
        "notifications_inbox", "notifications", ["recipient_user", "recipient_role", sa.text("create_time DESC")],
        schema=SCHEMA, postgresql_where=sa.text("channel = 'inbox'"),
    )
    # Read state per reader: a notification addressed to a role is read by each member on their own.
    op.create_table(
        "notification_reads",
        sa.Column("notification_id", UUID(as_uuid=False), nullable=False),
        sa.Column("reader", sa.Text, nullable=False),
        sa.Column("read_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("notification_id", "reader"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("notification_reads", schema=SCHEMA)
    op.drop_index("notifications_inbox", "notifications", schema=SCHEMA)
    for column in ("channel", "recipient_user", "recipient_role"):
        op.drop_column("notifications", column, schema=SCHEMA)
