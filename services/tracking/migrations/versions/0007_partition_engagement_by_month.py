"""Raw interactions and shares partitioned by month of their event time.

Each becomes PARTITION BY RANGE on its time (interactions.occurred_at, shares.created_at)
with a partition per UTC month that holds rows, the current and the next month, and a
default partition (see services/tracking/store/partitions.py). Every row is copied into
the new table, which then takes the old one's name; the old table is dropped.

Keys must include the partition key: the primary keys become (time, id), which also serve
the range scans the separate time indexes served (dropped). The ids stay unique: the
service mints them (UUIDv7 for interactions, UUIDv4 for shares) and never takes one from
a client; the keys that make ingestion idempotent (client_events, dedup_windows,
session_users) are small tables of their own, not partitioned, unchanged.

The copy holds both tables' locks until it commits: ingestion and shares wait meanwhile.
With months of raw interactions, run it at a quiet hour (about a minute per few million rows).

Revision ID: 0007
Revises: 0006
"""

from datetime import UTC, date, datetime

from alembic import op
from sqlalchemy import text

from services.tracking.store.partitions import (
    INTERACTIONS,
    SHARES,
    Partitioned,
    create_default_sql,
    create_partition_sql,
    months_ahead,
)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The secondary indexes both shapes keep, and what each shape adds.
INDEXES = {
    "interactions": (
        "CREATE INDEX interactions_product ON tracking.interactions (product_id, occurred_at)",
        "CREATE INDEX interactions_session ON tracking.interactions (session_id, occurred_at)",
        "CREATE INDEX interactions_user ON tracking.interactions (user_id, occurred_at) WHERE user_id IS NOT NULL",
    ),
    "shares": (
        "CREATE INDEX shares_ip ON tracking.shares (ip_hash, created_at)",
        "CREATE INDEX shares_post ON tracking.shares (post_id, created_at)",
    ),
}
PARTITIONED_KEYS = {
    "interactions": ("ALTER TABLE tracking.interactions ADD PRIMARY KEY (occurred_at, id)",),
    "shares": ("ALTER TABLE tracking.shares ADD PRIMARY KEY (created_at, id)",),
}
PLAIN_KEYS = {
    "interactions": (
        "ALTER TABLE tracking.interactions ADD PRIMARY KEY (id)",
        "CREATE INDEX interactions_occurred_at ON tracking.interactions (occurred_at)",
    ),
    "shares": (
        "ALTER TABLE tracking.shares ADD PRIMARY KEY (id)",
        "CREATE INDEX shares_created_at ON tracking.shares (created_at)",
    ),
}
SHARES_FOREIGN_KEY = "ALTER TABLE tracking.shares ADD FOREIGN KEY (post_id) REFERENCES tracking.posts (post_id)"


def _months_with_rows(table: Partitioned) -> list[date]:
    rows = op.get_bind().execute(
        text(f"SELECT DISTINCT date_trunc('month', {table.column} AT TIME ZONE 'UTC')::date FROM tracking.{table.table}_previous")
    )
    return [month for (month,) in rows]


def _rebuild(table: Partitioned, partitioned: bool) -> None:
    """Replaces the table with a copy of it, partitioned by month or plain, keeping every row."""
    name = table.table
    shape = f" PARTITION BY RANGE ({table.column})" if partitioned else ""
    op.execute(f"ALTER TABLE tracking.{name} RENAME TO {name}_previous")
    op.execute(f"CREATE TABLE tracking.{name} (LIKE tracking.{name}_previous INCLUDING DEFAULTS){shape}")
    if partitioned:
        for month in sorted(set(_months_with_rows(table)) | set(months_ahead(datetime.now(UTC)))):
            op.execute(create_partition_sql(table, month))
        op.execute(create_default_sql(table))
    op.execute(f"INSERT INTO tracking.{name} SELECT * FROM tracking.{name}_previous")
    op.execute(f"DROP TABLE tracking.{name}_previous")
    for statement in (PARTITIONED_KEYS if partitioned else PLAIN_KEYS)[name] + INDEXES[name]:
        op.execute(statement)
    if name == "shares":
        op.execute(SHARES_FOREIGN_KEY)
    op.execute(f"ANALYZE tracking.{name}")


def upgrade() -> None:
    for table in (INTERACTIONS, SHARES):
        _rebuild(table, partitioned=True)


def downgrade() -> None:
    for table in (INTERACTIONS, SHARES):
        _rebuild(table, partitioned=False)
