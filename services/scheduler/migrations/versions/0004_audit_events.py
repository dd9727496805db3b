"""The audit trail of the scheduler service's state-changing calls (libs/audit.py).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from libs.audit import audit_table

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    audit_table(sa.MetaData(schema="scheduler")).create(op.get_bind())


def downgrade() -> None:
    op.drop_table("audit_events", schema="scheduler")
