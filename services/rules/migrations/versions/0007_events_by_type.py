"""ListEvents with an event_type filter (the console's latest event of a type, as a dry run's
sample) walks this index backwards from the newest event of that type, however rare the type."""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX events_by_type_recent ON rules.events (type, seq DESC)")


def downgrade() -> None:
    op.execute("DROP INDEX rules.events_by_type_recent")
