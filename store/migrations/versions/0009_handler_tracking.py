"""Processing is tracked per (handler, event): a handler that did not run catches up from the log.

Events processed before this revision were seen by every handler of the time: they are recorded once
under the handler name "*", which every handler reads as its own.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "handled_events",
        sa.Column("handler", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_handled_events_handler_position", "handled_events", ["handler", "position"])
    op.execute(
        "INSERT INTO handled_events (handler, event_id, position, outcome, handled_at) "
        "SELECT '*', event_id, position, 'done', processed_at FROM processed_events"
    )


def downgrade() -> None:
    op.drop_index("ix_handled_events_handler_position", table_name="handled_events")
    op.drop_table("handled_events")
