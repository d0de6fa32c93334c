"""The tables (SQLAlchemy 2 typed ORM). Alembic migrations in ``migrations/`` own the schema.

Arrays are packed little-endian bytes (see :mod:`registry.chem.arrays`); times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT keys on PostgreSQL; INTEGER (the rowid alias) on SQLite.
BigID = BigInteger().with_variant(Integer(), "sqlite")
# sha256 hex digests. On PostgreSQL the database collation (C.UTF-8 here) would compare them
# through strcoll; hex compares the same bytewise, so the column uses the "C" collation
# (memcmp) for its unique index and ORDER BY hash.
HashHex = String(64).with_variant(String(64, collation="C"), "postgresql")
# Chemical formulas (ASCII) compare bytewise on both backends: SQLite's BINARY, PostgreSQL's
# "C" (migration 0004), so the formula index never compares through strcoll.
Formula = String(255).with_variant(String(255, collation="C"), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict: JSON, list: JSON}


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Run(Base):
    """A provenance run: ingest, dataset creation, training, labeling, analysis..."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # see store.runs.STATES
    params: Mapped[dict | None]
    result: Mapped[dict | None]
    code_version: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    environment: Mapped[dict | None]
    user: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = _created()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class RunEntity(Base):
    """A lineage edge: a run consumed (``input``) or produced (``output``) an entity.

    ``entity_type`` is one of file, level, dataset_version, model_version, label, structure,
    run, checkpoint (a training checkpoint in the artifact store); ``entity_id`` points into
    that table, ``ref`` names files/URIs, ``sha256`` pins bytes.
    """

    __tablename__ = "run_entities"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(8))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[int | None] = mapped_column(BigInteger)
    ref: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict | None]
    __table_args__ = (Index(None, "entity_type", "entity_id"),)


class Composition(Base):
    """A distinct composition (element counts), named by its Hill formula.

    Structures point at their composition; element, formula, ``nsites`` and ``nelements``
    filters are evaluated over this table, which holds one row per distinct formula rather than
    one per structure (a conformer data set has many structures per formula). Append-only and
    never updated: rows are created on first use, by the ingest that needs them, in a short
    transaction of their own (like levels of theory), and other rows reference them by id.
    """

    __tablename__ = "compositions"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    formula_hill: Mapped[str] = mapped_column(Formula, unique=True)
    formula_reduced: Mapped[str] = mapped_column(Formula, index=True)
    formula_anonymous: Mapped[str] = mapped_column(Formula)
    n_atoms: Mapped[int] = mapped_column(Integer)
    nelements: Mapped[int] = mapped_column(SmallInteger)


class CompositionElement(Base):
    """Element counts of a composition, keyed ``(z, composition_id)`` (the element filters'
    access path; SQLite: a ``WITHOUT ROWID`` table clustered on the key).

    Derived data, written by the transaction that creates the composition, so no foreign key
    (its per-row check took most of the time of creating 10,000 compositions)."""

    __tablename__ = "composition_elements"
    z: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    composition_id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)
    __table_args__ = ({"sqlite_with_rowid": False},)


class Structure(Base):
    __tablename__ = "structures"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    hash: Mapped[str] = mapped_column(HashHex, unique=True)
    hash_version: Mapped[int] = mapped_column(SmallInteger)
    n_atoms: Mapped[int] = mapped_column(Integer)
    numbers: Mapped[bytes] = mapped_column(LargeBinary)  # <u1 (n,), canonical atom order
    positions: Mapped[bytes] = mapped_column(LargeBinary)  # <f8 (n, 3) Å
    cell: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (3, 3) Å; NULL: no cell
    pbc: Mapped[int] = mapped_column(SmallInteger)  # bit 0: x, 1: y, 2: z
    nperiodic: Mapped[int] = mapped_column(SmallInteger)
    charge: Mapped[int] = mapped_column(SmallInteger, default=0)
    multiplicity: Mapped[int] = mapped_column(SmallInteger, default=1)
    # Derived from ``numbers`` by the writer (migration 0005). No foreign key, as for
    # ``run_id``: compositions are append-only and committed before the structures that use
    # them, and a per-row check would cost what the composition table saves. The index
    # ``(composition_id, id)`` serves the composition filters (``composition_id IN (...)``)
    # without reading the (wide) rows: PostgreSQL answers them by index-only scans.
    composition_id: Mapped[int] = mapped_column(BigID)
    source: Mapped[str | None] = mapped_column(Text)
    info: Mapped[dict | None]
    # The ingest run that created the row (provenance). Deliberately no foreign key: the row
    # is written by that run's own ingest, which creates the run first and never deletes it,
    # and a per-row FK check is a large part of bulk-insert time (docs/performance.md). No index
    # either: every row of an ingest has the same value, the one query using it
    # (``_nnp_run``-style "made by" filters) is an OR with a label sub-query that scans
    # structures anyway, and the index is a noticeable share of SQLite ingest CPU.
    run_id: Mapped[int | None] = mapped_column(BigID)
    created_at: Mapped[datetime] = _created()
    __table_args__ = (Index(None, "composition_id", "id"),)


class LevelOfTheory(Base):
    __tablename__ = "levels_of_theory"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)  # canonical, lower case
    method: Mapped[str] = mapped_column(String(128))
    basis: Mapped[str | None] = mapped_column(String(128))
    program: Mapped[str | None] = mapped_column(String(128))
    program_version: Mapped[str | None] = mapped_column(String(64))
    keywords: Mapped[dict | None]
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    fidelity_rank: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class ReferenceEnergy(Base):
    """Per-element atomic reference (self) energy of a level, eV."""

    __tablename__ = "reference_energies"
    level_id: Mapped[int] = mapped_column(
        ForeignKey("levels_of_theory.id", ondelete="CASCADE"), primary_key=True
    )
    z: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    energy: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(16))  # "set" or "fit"
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class Label(Base):
    """One computed result for (structure, level). Immutable but for status.

    At most one ``ok`` label per (structure, level) (a partial unique index); a correction
    retracts the old row and adds a new one that ``supersedes`` it.
    """

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("structures.id"))
    level_id: Mapped[int] = mapped_column(ForeignKey("levels_of_theory.id"))
    hash: Mapped[str] = mapped_column(HashHex)
    energy: Mapped[float | None] = mapped_column(Float)  # eV
    forces: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (n, 3) eV/Å
    dipole: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (3,) e·Å
    charges: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (n,) e
    stress: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (6,) eV/Å³, Voigt
    max_force: Mapped[float | None] = mapped_column(Float)  # eV/Å, max |F_i|, set at ingest
    status: Mapped[str] = mapped_column(String(16), default="ok")  # ok / failed / retracted
    status_reason: Mapped[str | None] = mapped_column(Text)
    source_unit: Mapped[str | None] = mapped_column(String(16))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"))
    # Provenance pointer written by the ingest run itself (see Structure.run_id): no FK, no
    # index. structure_id, level_id and supersedes_id are checked references: declarative
    # foreign keys on SQLite; on PostgreSQL one set-based check per statement, the parents
    # being append-only (migrations 0002 and 0004, PG_SET_CHECKED_FKS; dataset_members
    # likewise).
    run_id: Mapped[int | None] = mapped_column(BigID)
    created_at: Mapped[datetime] = _created()
    __table_args__ = (
        # At most one ok label per (structure, level); level first, so it also answers
        # "structures with an ok label at level L" (the _nnp_levels filters).
        Index(
            "uq_labels_ok",
            "level_id",
            "structure_id",
            unique=True,
            sqlite_where=text("status = 'ok'"),
            postgresql_where=text("status = 'ok'"),
        ),
        Index(None, "structure_id"),
    )


# Foreign keys of the ORM that PostgreSQL enforces with set-based statement triggers instead
# of per-row constraint triggers, their parents being append-only (migrations 0002, 0004).
PG_SET_CHECKED_FKS = (
    "fk_labels_structure_id_structures", "fk_labels_level_id_levels_of_theory",
    "fk_dataset_members_label_id_labels", "fk_dataset_members_structure_id_structures",
    "fk_dataset_members_version_id_dataset_versions", "fk_labels_supersedes_id_labels",
)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class DatasetVersion(Base):
    """An immutable dataset version: pinned labels, splits and a content hash."""

    __tablename__ = "dataset_versions"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    version: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64), index=True)
    filter: Mapped[str | None] = mapped_column(Text)
    levels: Mapped[list]  # canonical level names, in fidelity order
    params: Mapped[dict | None]  # split fractions, group_by, seed, delta...
    note: Mapped[str | None] = mapped_column(Text)
    n_structures: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = _created()
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)


class DatasetMember(Base):
    """A pinned label in a version. split: 0 train, 1 validation, 2 test."""

    __tablename__ = "dataset_members"
    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True)
    structure_id: Mapped[int] = mapped_column(ForeignKey("structures.id"))
    split: Mapped[int] = mapped_column(SmallInteger)
    __table_args__ = (Index(None, "label_id"), Index(None, "version_id", "structure_id"))


class DatasetAlias(Base):
    __tablename__ = "dataset_aliases"
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    updated_at: Mapped[datetime] = _created()


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    architecture: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict | None]
    elements: Mapped[list | None]
    cutoff: Mapped[float | None] = mapped_column(Float)
    units: Mapped[dict | None]
    level_id: Mapped[int | None] = mapped_column(ForeignKey("levels_of_theory.id"))
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    frozen: Mapped[list | None]
    metrics: Mapped[dict | None]
    n_members: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="ready")  # ready / retracted
    status_reason: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = _created()
    __table_args__ = (UniqueConstraint("model_id", "version"),)


class ModelFile(Base):
    """A file of a model version in the artifact store (weights of member k, extras)."""

    __tablename__ = "model_files"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # weights / extra
    member_index: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    uri: Mapped[str] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("model_version_id", "name"),)


class ModelAlias(Base):
    __tablename__ = "model_aliases"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime] = _created()
    updated_by: Mapped[str | None] = mapped_column(String(128))
