"""Short handles for proposals (a per-database number, #12, the operator can type instead of the id),
and when the operator was reminded that a proposal expires soon.

Existing proposals are numbered in the order their proposal.recorded events stand in the log, exactly
as a replay numbers them; none has been reminded yet.

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("proposals") as batch:
        batch.add_column(sa.Column("number", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    connection = op.get_bind()
    recorded = connection.execute(
        sa.text("SELECT stream FROM events WHERE type = 'proposal.recorded' ORDER BY position")
    ).scalars()
    number = 0
    for number, proposal_id in enumerate(recorded, start=1):
        connection.execute(
            sa.text("UPDATE proposals SET number = :number WHERE id = :id"),
            {"number": number, "id": proposal_id},
        )
    if number:  # as a replay leaves it: no row until the first proposal
        connection.execute(
            sa.text("INSERT INTO counters (name, value) VALUES ('proposals', :value)"), {"value": number}
        )
    op.create_index("ix_proposals_number", "proposals", ["number"], unique=True)


def downgrade() -> None:
    op.drop_table("counters")
    op.drop_index("ix_proposals_number", table_name="proposals")
    with op.batch_alter_table("proposals") as batch:
        batch.drop_column("reminded_at")
        batch.drop_column("number")
