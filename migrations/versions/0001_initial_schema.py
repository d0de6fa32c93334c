"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:29:19.946150
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# sha256 hex: bytewise "C" collation on PostgreSQL (see registry/schema.py HashHex).
HASH_HEX = sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", name=op.f("uq_datasets_name")),
    )
    op.create_table(
        "levels_of_theory",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=128), nullable=False),
        sa.Column("basis", sa.String(length=128), nullable=True),
        sa.Column("program", sa.String(length=128), nullable=True),
        sa.Column("program_version", sa.String(length=64), nullable=True),
        sa.Column("keywords", sa.JSON(), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("fidelity_rank", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_levels_of_theory")),
        sa.UniqueConstraint("hash", name=op.f("uq_levels_of_theory_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_levels_of_theory_name")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=True),
        sa.Column("user", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_kind"), ["kind"], unique=False)

    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "dataset_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("filter", sa.Text(), nullable=True),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("n_structures", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_versions_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_dataset_versions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint(
            "dataset_id", "version", name=op.f("uq_dataset_versions_dataset_id_version")
        ),
    )
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_versions_hash"), ["hash"], unique=False)

    op.create_table(
        "run_entities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.BigInteger(), nullable=True),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_entities_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_entities")),
    )
    with op.batch_alter_table("run_entities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_run_entities_entity_type_entity_id"),
            ["entity_type", "entity_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_run_entities_run_id"), ["run_id"], unique=False)

    op.create_table(
        "structures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", HASH_HEX, nullable=False),
        sa.Column("hash_version", sa.SmallInteger(), nullable=False),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("nelements", sa.SmallInteger(), nullable=False),
        sa.Column("numbers", sa.LargeBinary(), nullable=False),
        sa.Column("positions", sa.LargeBinary(), nullable=False),
        sa.Column("cell", sa.LargeBinary(), nullable=True),
        sa.Column("pbc", sa.SmallInteger(), nullable=False),
        sa.Column("nperiodic", sa.SmallInteger(), nullable=False),
        sa.Column("charge", sa.SmallInteger(), nullable=False),
        sa.Column("multiplicity", sa.SmallInteger(), nullable=False),
        sa.Column("formula_hill", sa.String(length=255), nullable=False),
        sa.Column("formula_reduced", sa.String(length=255), nullable=False),
        sa.Column("formula_anonymous", sa.String(length=255), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("info", sa.JSON(), nullable=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_structures")),
        sa.UniqueConstraint("hash", name=op.f("uq_structures_hash")),
    )
    with op.batch_alter_table("structures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_structures_formula_reduced"), ["formula_reduced"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_structures_n_atoms"), ["n_atoms"], unique=False)

    op.create_table(
        "al_selections",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "structure_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_al_selections_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["structure_id"],
            ["structures.id"],
            name=op.f("fk_al_selections_structure_id_structures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_al_selections")),
    )
    with op.batch_alter_table("al_selections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_al_selections_run_id"), ["run_id"], unique=False)

    op.create_table(
        "dataset_aliases",
        sa.Column(
            "dataset_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_aliases_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_aliases_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("dataset_id", "alias", name=op.f("pk_dataset_aliases")),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "structure_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("level_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", HASH_HEX, nullable=False),
        sa.Column("energy", sa.Float(), nullable=True),
        sa.Column("forces", sa.LargeBinary(), nullable=True),
        sa.Column("dipole", sa.LargeBinary(), nullable=True),
        sa.Column("charges", sa.LargeBinary(), nullable=True),
        sa.Column("stress", sa.LargeBinary(), nullable=True),
        sa.Column("max_force", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("source_unit", sa.String(length=16), nullable=True),
        sa.Column(
            "supersedes_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["level_id"], ["levels_of_theory.id"], name=op.f("fk_labels_level_id_levels_of_theory")
        ),
        sa.ForeignKeyConstraint(
            ["structure_id"], ["structures.id"], name=op.f("fk_labels_structure_id_structures")
        ),
        sa.ForeignKeyConstraint(
            ["supersedes_id"], ["labels.id"], name=op.f("fk_labels_supersedes_id_labels")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
    )
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_labels_level_id_status_structure_id"),
            ["level_id", "status", "structure_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_labels_structure_id"), ["structure_id"], unique=False)
        batch_op.create_index(
            "uq_labels_ok",
            ["structure_id", "level_id"],
            unique=True,
            sqlite_where=sa.text("status = 'ok'"),
            postgresql_where=sa.text("status = 'ok'"),
        )

    op.create_table(
        "model_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("architecture", sa.String(length=128), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("elements", sa.JSON(), nullable=True),
        sa.Column("cutoff", sa.Float(), nullable=True),
        sa.Column("units", sa.JSON(), nullable=True),
        sa.Column("level_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "dataset_version_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("frozen", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("n_members", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_model_versions_dataset_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["level_id"],
            ["levels_of_theory.id"],
            name=op.f("fk_model_versions_level_id_levels_of_theory"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_versions_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_versions.id"],
            name=op.f("fk_model_versions_parent_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_model_versions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model_id", "version", name=op.f("uq_model_versions_model_id_version")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_versions_dataset_version_id"), ["dataset_version_id"], unique=False
        )

    op.create_table(
        "reference_energies",
        sa.Column("level_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("z", sa.SmallInteger(), nullable=False),
        sa.Column("energy", sa.Float(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column(
            "dataset_version_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_reference_energies_dataset_version_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["level_id"],
            ["levels_of_theory.id"],
            name=op.f("fk_reference_energies_level_id_levels_of_theory"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_reference_energies_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("level_id", "z", name=op.f("pk_reference_energies")),
    )
    op.create_table(
        "structure_elements",
        sa.Column(
            "structure_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("z", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("structure_id", "z", name=op.f("pk_structure_elements")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("structure_elements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_structure_elements_z_structure_id"), ["z", "structure_id"], unique=False
        )

    op.create_table(
        "dataset_members",
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("label_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "structure_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("split", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"], ["labels.id"], name=op.f("fk_dataset_members_label_id_labels")
        ),
        sa.ForeignKeyConstraint(
            ["structure_id"],
            ["structures.id"],
            name=op.f("fk_dataset_members_structure_id_structures"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_members_version_id_dataset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "label_id", name=op.f("pk_dataset_members")),
    )
    with op.batch_alter_table("dataset_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_members_label_id"), ["label_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dataset_members_version_id_structure_id"),
            ["version_id", "structure_id"],
            unique=False,
        )

    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column(
            "version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_model_aliases_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_aliases_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", name=op.f("pk_model_aliases")),
    )
    op.create_table(
        "model_files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "model_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("member_index", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_files_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_files")),
        sa.UniqueConstraint(
            "model_version_id", "name", name=op.f("uq_model_files_model_version_id_name")
        ),
    )


def downgrade() -> None:
    op.drop_table("model_files")
    op.drop_table("model_aliases")
    with op.batch_alter_table("dataset_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_members_version_id_structure_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_members_label_id"))

    op.drop_table("dataset_members")
    with op.batch_alter_table("structure_elements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_structure_elements_z_structure_id"))

    op.drop_table("structure_elements")
    op.drop_table("reference_energies")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_dataset_version_id"))

    op.drop_table("model_versions")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_labels_ok",
            sqlite_where=sa.text("status = 'ok'"),
            postgresql_where=sa.text("status = 'ok'"),
        )
        batch_op.drop_index(batch_op.f("ix_labels_structure_id"))
        batch_op.drop_index(batch_op.f("ix_labels_level_id_status_structure_id"))

    op.drop_table("labels")
    op.drop_table("dataset_aliases")
    with op.batch_alter_table("al_selections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_al_selections_run_id"))

    op.drop_table("al_selections")
    with op.batch_alter_table("structures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_structures_n_atoms"))
        batch_op.drop_index(batch_op.f("ix_structures_formula_reduced"))

    op.drop_table("structures")
    with op.batch_alter_table("run_entities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_entities_run_id"))
        batch_op.drop_index(batch_op.f("ix_run_entities_entity_type_entity_id"))

    op.drop_table("run_entities")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_versions_hash"))

    op.drop_table("dataset_versions")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_kind"))

    op.drop_table("runs")
    op.drop_table("models")
    op.drop_table("levels_of_theory")
    op.drop_table("datasets")
