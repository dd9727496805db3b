"""The audit trail of the tracking service's state-changing calls (libs/audit.py).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from libs.audit import audit_table

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    audit_table(sa.MetaData(schema="tracking")).create(op.get_bind())


def downgrade() -> None:
    op.drop_table("audit_events", schema="tracking")
