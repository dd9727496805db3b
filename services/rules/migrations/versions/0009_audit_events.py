"""The audit trail of the rules service's state-changing calls (libs/audit.py).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from libs.audit import audit_table

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    audit_table(sa.MetaData(schema="rules")).create(op.get_bind())


def downgrade() -> None:
    op.drop_table("audit_events", schema="rules")
