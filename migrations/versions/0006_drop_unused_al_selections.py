"""drop the unused al_selections table

Nothing ever wrote or read ``al_selections`` (created in 0001 ahead of active learning). The
active-learning stage defines its own campaign, iteration and candidate tables when it lands;
until then an empty table with foreign keys into ``runs`` and ``structures`` is only cost and
confusion. Downgrade re-creates it empty.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("al_selections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_al_selections_run_id"))
    op.drop_table("al_selections")


def downgrade() -> None:
    op.create_table(
        "al_selections",
        sa.Column("id", _ID, nullable=False),
        sa.Column("run_id", _ID, nullable=False),
        sa.Column("structure_id", _ID, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_al_selections_run_id_runs")),
        sa.ForeignKeyConstraint(["structure_id"], ["structures.id"],
                                name=op.f("fk_al_selections_structure_id_structures")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_selections")),
    )
    with op.batch_alter_table("al_selections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_al_selections_run_id"), ["run_id"], unique=False)
