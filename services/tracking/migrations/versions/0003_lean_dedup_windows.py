"""De-duplication windows without the window_start index.

Every ingested event writes its window row; the index only served the daily purge of
closed windows, which may as well scan this small (purged) table.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX tracking.dedup_windows_start")


def downgrade() -> None:
    op.execute("CREATE INDEX dedup_windows_start ON tracking.dedup_windows (window_start)")
