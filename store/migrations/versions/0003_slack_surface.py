"""slack surface: the Slack event ids already handled, for retry de-duplication.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slack_events_seen",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("slack_events_seen", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slack_events_seen_seen_at"), ["seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("slack_events_seen", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_events_seen_seen_at"))
    op.drop_table("slack_events_seen")
