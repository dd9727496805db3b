"""Outbox events carry the W3C traceparent of the transaction that wrote them.

Ten statements write outbox rows (placement, orchestration, single-row events); rather
than thread a parameter through each, the column's default reads a transaction-local
setting that `libs.db` sets only while tracing is on (`SET LOCAL`-style `set_config`).
Tracing off, the setting is absent and the column stays NULL: no extra round trip.
The default is stable, not volatile, so adding the column rewrites no existing row.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE batch.outbox ADD COLUMN trace_parent text "
        "DEFAULT nullif(current_setting('loom.traceparent', true), '')"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE batch.outbox DROP COLUMN trace_parent")
