"""active learning: campaigns, iterations, trajectories and candidates

The state of an active-learning campaign (``nnp al``) lives in the registry, so a killed
campaign resumes where it stopped: ``al_campaigns`` (settings, seeds, reference level, state),
``al_iterations`` (one row per iteration, advanced phase by phase: the training run and model
version, the threshold, the dataset version it produced), ``al_trajectories`` (each sampling
trajectory with why it stopped early) and ``al_candidates`` (every sampled frame: geometry,
committee disagreement, selected or not, its label ok / failed with the message). Replaces the
``al_selections`` table that 0006 dropped unused. Downgrade drops the four tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# sha256 hex: bytewise "C" collation on PostgreSQL (see registry/store/schema.py HashHex).
_HASH = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def _fk(table: str, column: str, target: str, **kw) -> sa.ForeignKeyConstraint:
    parent = target.split(".")[0]
    return sa.ForeignKeyConstraint([column], [target],
                                   name=op.f(f"fk_{table}_{column}_{parent}"), **kw)


def upgrade() -> None:
    op.create_table(
        "al_campaigns",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("labeler", sa.String(length=255), nullable=False),
        sa.Column("level_id", _ID, nullable=False),
        sa.Column("dataset_version_id", _ID, nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("run_id", _ID, nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _fk("al_campaigns", "dataset_version_id", "dataset_versions.id"),
        _fk("al_campaigns", "level_id", "levels_of_theory.id"),
        _fk("al_campaigns", "run_id", "runs.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_campaigns")),
        sa.UniqueConstraint("name", name=op.f("uq_al_campaigns_name")),
    )
    op.create_table(
        "al_iterations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("dataset_version_id", _ID, nullable=False),
        sa.Column("train_run_id", _ID, nullable=True),
        sa.Column("model_version_id", _ID, nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("fraction_above", sa.Float(), nullable=True),
        sa.Column("ingest_run_id", _ID, nullable=True),
        sa.Column("new_dataset_version_id", _ID, nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("seconds", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        _fk("al_iterations", "campaign_id", "al_campaigns.id", ondelete="CASCADE"),
        _fk("al_iterations", "dataset_version_id", "dataset_versions.id"),
        _fk("al_iterations", "ingest_run_id", "runs.id"),
        _fk("al_iterations", "model_version_id", "model_versions.id"),
        _fk("al_iterations", "new_dataset_version_id", "dataset_versions.id"),
        _fk("al_iterations", "train_run_id", "runs.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_iterations")),
        sa.UniqueConstraint("campaign_id", "iteration",
                            name=op.f("uq_al_iterations_campaign_id_iteration")),
    )
    op.create_table(
        "al_candidates",
        sa.Column("id", _ID, nullable=False),
        sa.Column("iteration_id", _ID, nullable=False),
        sa.Column("trajectory", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("hash", _HASH, nullable=False),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("numbers", sa.LargeBinary(), nullable=False),
        sa.Column("positions", sa.LargeBinary(), nullable=False),
        sa.Column("cell", sa.LargeBinary(), nullable=True),
        sa.Column("pbc", sa.SmallInteger(), nullable=False),
        sa.Column("charge", sa.SmallInteger(), nullable=False),
        sa.Column("multiplicity", sa.SmallInteger(), nullable=False),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.Column("energy", sa.Float(), nullable=True),
        sa.Column("energy_std", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("label_status", sa.String(length=16), nullable=True),
        sa.Column("label_message", sa.Text(), nullable=True),
        sa.Column("label_energy", sa.Float(), nullable=True),
        sa.Column("label_forces", sa.LargeBinary(), nullable=True),
        sa.Column("label_seconds", sa.Float(), nullable=True),
        sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("structure_id", _ID, nullable=True),
        sa.Column("label_id", _ID, nullable=True),
        _fk("al_candidates", "iteration_id", "al_iterations.id", ondelete="CASCADE"),
        _fk("al_candidates", "label_id", "labels.id"),
        _fk("al_candidates", "structure_id", "structures.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_candidates")),
        sa.UniqueConstraint("iteration_id", "trajectory", "step",
                            name=op.f("uq_al_candidates_iteration_id_trajectory_step")),
    )
    op.create_index(op.f("ix_al_candidates_iteration_id_label_status"), "al_candidates",
                    ["iteration_id", "label_status"], unique=False)
    op.create_table(
        "al_trajectories",
        sa.Column("id", _ID, nullable=False),
        sa.Column("iteration_id", _ID, nullable=False),
        sa.Column("trajectory", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("seed_structure_id", _ID, nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("md_seed", sa.BigInteger(), nullable=False),
        sa.Column("sampler", sa.String(length=16), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        _fk("al_trajectories", "iteration_id", "al_iterations.id", ondelete="CASCADE"),
        _fk("al_trajectories", "seed_structure_id", "structures.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_trajectories")),
        sa.UniqueConstraint("iteration_id", "trajectory",
                            name=op.f("uq_al_trajectories_iteration_id_trajectory")),
    )


def downgrade() -> None:
    op.drop_table("al_trajectories")
    op.drop_index(op.f("ix_al_candidates_iteration_id_label_status"), table_name="al_candidates")
    op.drop_table("al_candidates")
    op.drop_table("al_iterations")
    op.drop_table("al_campaigns")
