"""Subscriptions keep their amount per month (what MRR counts) next to the amount per billing period.

A yearly plan used to count its whole yearly amount as MRR. Existing rows keep that figure until the
projections are rebuilt (`crm replay`), which computes it from each event's interval.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column("monthly_cents", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
    op.execute("UPDATE subscriptions SET monthly_cents = amount_cents")


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("monthly_cents")
