"""Stored events keep the W3C traceparent their producer sent, so the evaluation and the
actions they cause, minutes later in another process, can link back to the originating call."""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE rules.events ADD COLUMN trace_parent text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE rules.events DROP COLUMN trace_parent")
