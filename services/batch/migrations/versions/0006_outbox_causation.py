"""Outbox events carry the causation chain of the call that wrote them (libs/causation.py):
the rule executions whose actions led to the change. The rules service reads it from the
delivered event's `data.causation` for its loop guard and opt-in.

As with trace_parent (0005), the column's default reads a transaction-local setting that
`libs.db.carry_trace` sets only when the call carries a chain, so none of the statements
that write outbox rows changes and a call without a chain costs nothing. The setting holds
compact JSON checked by libs.causation; the default is stable, so no existing row is rewritten.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE batch.outbox ADD COLUMN causation json "
        "DEFAULT CAST(nullif(current_setting('loom.causation', true), '') AS json)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE batch.outbox DROP COLUMN causation")
