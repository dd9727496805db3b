"""Idempotency keys of the tracking service's mutating RPCs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from libs.idempotency import idempotency_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    idempotency_table(sa.MetaData(schema="tracking")).create(op.get_bind())


def downgrade() -> None:
    op.drop_table("idempotency_keys", schema="tracking")
