"""Each hot memory's vector, kind and time beside the log, keyed by customer (store.memory.vectors).

Empty here: the rows are filled from the Chroma collection the first time the memory projection runs
(`VectorIndex.backfill`), and until then recall asks Chroma as before.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_vectors",
        sa.Column("collection", sa.String(63), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_us", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("chunk", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ux_memory_vectors_id", "memory_vectors", ["collection", "id"], unique=True)
    op.create_table(
        "memory_vector_sets",
        sa.Column("collection", sa.String(63), primary_key=True),
        sa.Column("complete_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("memory_vector_sets")
    op.drop_index("ux_memory_vectors_id", table_name="memory_vectors")
    op.drop_table("memory_vectors")
