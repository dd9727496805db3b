"""Leases name their holder: each rules process renews only the events, executions and
waits whose `lease_owner` is still its own token, so a renewal arriving after another
replica took the work over (the lease lapsed) cannot resurrect the lost lease."""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("events", "executions", "waits")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE rules.{table} ADD COLUMN lease_owner uuid")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE rules.{table} DROP COLUMN lease_owner")
