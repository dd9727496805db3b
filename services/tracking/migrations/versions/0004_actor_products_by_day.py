"""actor_products_daily keyed by day only.

The aggregation replaces whole days (DELETE by day, INSERT of distinct rows) and reads
ranges of days; the (day, actor, product) primary key only made each rebuild maintain a
wide text index over hundreds of thousands of rows.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tracking.actor_products_daily DROP CONSTRAINT actor_products_daily_pkey")
    op.execute("CREATE INDEX actor_products_daily_day ON tracking.actor_products_daily (day)")


def downgrade() -> None:
    op.execute("DROP INDEX tracking.actor_products_daily_day")
    op.execute("ALTER TABLE tracking.actor_products_daily ADD PRIMARY KEY (day, actor, product_id)")
