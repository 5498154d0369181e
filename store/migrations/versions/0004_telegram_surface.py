"""telegram surface: update ids already handled, and pending ForceReply edit prompts (issue 8).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telegram_updates",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("update_id"),
    )
    op.create_index("ix_telegram_updates_seen_at", "telegram_updates", ["seen_at"], unique=False)
    op.create_table(
        "telegram_edits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("proposal_id", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(length=32), nullable=False),
        sa.Column("prompt_message_id", sa.String(length=32), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_telegram_edits_proposal_id", "telegram_edits", ["proposal_id"], unique=False)
    op.create_index(
        "ix_telegram_edits_prompt", "telegram_edits", ["chat_id", "prompt_message_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_telegram_edits_prompt", table_name="telegram_edits")
    op.drop_index("ix_telegram_edits_proposal_id", table_name="telegram_edits")
    op.drop_table("telegram_edits")
    op.drop_index("ix_telegram_updates_seen_at", table_name="telegram_updates")
    op.drop_table("telegram_updates")
