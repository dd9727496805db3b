"""Identifier columns of the tracking schema compare as bytes (collation "C").

Ids are validated ASCII tokens, so a linguistic collation buys nothing but cost: with
the database's default (often a libc locale such as en_US.UTF-8 or C.UTF-8) every
B-tree step and sort of the hot path calls strcoll, and sorts may not use abbreviated
keys. Byte order also makes the order of ids the same whatever locale the database was
created with. Every column that holds ids changes together, so joins between raw events
and aggregates keep comparing one collation and can use each other's indexes.

Changing a column's collation keeps the table's data as it is but rebuilds the indexes
on that column, under an exclusive lock that holds ingestion back until they are built:
with months of raw interactions, run it at a quiet hour.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID_COLUMNS = {
    "interactions": ("product_id", "session_id", "user_id", "anonymous_id", "client_event_id"),
    "client_events": ("client_event_id",),
    "dedup_windows": ("session_id", "product_id"),
    "session_users": ("session_id", "user_id"),
    "posts": ("post_id",),
    "shares": ("post_id", "session_id", "user_id"),
    "product_daily": ("product_id",),
    "actor_products_daily": ("actor", "product_id"),
    "user_products_daily": ("user_id", "product_id"),
    "session_hours": ("session_id",),
    "funnel_steps": ("product_id", "session_id"),
    "product_popularity": ("product_id",),
    "product_pairs": ("product_id", "paired_product_id"),
}


def _collate(collation: str) -> None:
    for table, columns in ID_COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} TYPE text COLLATE {collation}" for column in columns)
        op.execute(f"ALTER TABLE tracking.{table} {changes}")


def upgrade() -> None:
    _collate('"C"')


def downgrade() -> None:
    _collate('"default"')
