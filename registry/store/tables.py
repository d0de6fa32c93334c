"""The tables, as SQLAlchemy Core :class:`~sqlalchemy.Table` objects. Alembic migrations in
``migrations/`` own the schema; :mod:`.schema` maps its ORM classes onto these tables.

Reads that need no ORM objects (queries, counts, stats, model pulls) use these tables alone:
importing them costs a few milliseconds, against ~0.25 s for ``sqlalchemy.orm`` and mapping
the classes, which is most of a cold ``nnp query --count`` (docs/performance.md).

Arrays are packed little-endian bytes (see :mod:`registry.chem.arrays`); times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _id() -> Column:
    return Column("id", BigID, primary_key=True)


def _created(name: str = "created_at") -> Column:
    return Column(name, DateTime(timezone=True), default=utcnow, nullable=False)


def _col(name: str, type_, *args, null: bool = False, **kw) -> Column:
    """A column, NOT NULL unless ``null``."""
    return Column(name, type_, *args, nullable=null, **kw)


def _fk(name: str, target: str, *, null: bool = False, **kw) -> Column:
    """A foreign-key column; its type is the referenced column's."""
    ondelete = kw.pop("ondelete", None)
    return Column(name, ForeignKey(target, ondelete=ondelete), nullable=null, **kw)


# A provenance run: ingest, dataset creation, training, labeling, analysis...
runs = Table(
    "runs", metadata,
    _id(),
    _col("kind", String(64), index=True),
    _col("status", String(16), default="running"),  # see store.runs.STATES
    _col("params", JSON, null=True),
    _col("result", JSON, null=True),
    _col("code_version", String(64), null=True),
    _col("git_commit", String(64), null=True),
    _col("git_dirty", Boolean, null=True),
    _col("environment", JSON, null=True),
    _col("user", String(128), null=True),
    _created("started_at"),
    _col("ended_at", DateTime(timezone=True), null=True),
    _col("error", Text, null=True),
)

# A lineage edge: a run consumed (``input``) or produced (``output``) an entity.
# ``entity_type`` is one of file, level, dataset_version, model_version, label, structure,
# run, checkpoint (a training checkpoint in the artifact store); ``entity_id`` points into
# that table, ``ref`` names files/URIs, ``sha256`` pins bytes.
run_entities = Table(
    "run_entities", metadata,
    _id(),
    _fk("run_id", "runs.id", ondelete="CASCADE", index=True),
    _col("role", String(8)),
    _col("entity_type", String(32)),
    _col("entity_id", BigInteger, null=True),
    _col("ref", Text, null=True),
    _col("sha256", String(64), null=True),
    _col("meta", JSON, null=True),
    Index(None, "entity_type", "entity_id"),
)

# A distinct composition (element counts), named by its Hill formula.
# Structures point at their composition; element, formula, ``nsites`` and ``nelements``
# filters are evaluated over this table, which holds one row per distinct formula rather than
# one per structure (a conformer data set has many structures per formula). Append-only and
# never updated: rows are created on first use, by the ingest that needs them, in a short
# transaction of their own (like levels of theory), and other rows reference them by id.
compositions = Table(
    "compositions", metadata,
    _id(),
    _col("formula_hill", Formula, unique=True),
    _col("formula_reduced", Formula, index=True),
    _col("formula_anonymous", Formula),
    _col("n_atoms", Integer),
    _col("nelements", SmallInteger),
    # The composition's set of elements (migration 0008; no foreign key, as for
    # structures.composition_id). The index serves element filters: matching element sets
    # are found in the small element_sets table, then their compositions (of a size range)
    # by range scans of the index alone (it holds the id), without visiting the
    # compositions of other element sets.
    _col("element_set_id", BigID),
    Index(None, "element_set_id", "n_atoms", "id"),
)

# A distinct set of elements (a chemical system such as C-H-N-O), one row per set. The set
# is a bit mask of atomic numbers in two halves: bit z-1 of ``mask_lo`` for Z 1-63, bit z-64
# of ``mask_hi`` for Z 64-126, so HAS / HAS ALL / HAS ANY / HAS ONLY are bitwise tests on a
# table with as many rows as a registry has chemical systems. Append-only, created like
# compositions (by the first ingest that needs one).
element_sets = Table(
    "element_sets", metadata,
    _id(),
    _col("mask_lo", BigInteger),
    _col("mask_hi", BigInteger),
    _col("nelements", SmallInteger),
    UniqueConstraint("mask_lo", "mask_hi"),
)

# Element counts of a composition, keyed ``(z, composition_id)`` (the element filters'
# access path; SQLite: a ``WITHOUT ROWID`` table clustered on the key).
# Derived data, written by the transaction that creates the composition, so no foreign key
# (its per-row check took most of the time of creating 10,000 compositions).
composition_elements = Table(
    "composition_elements", metadata,
    _col("z", SmallInteger, primary_key=True, autoincrement=False),
    _col("composition_id", BigID, primary_key=True, autoincrement=False),
    _col("count", Integer),
    sqlite_with_rowid=False,
)

structures = Table(
    "structures", metadata,
    _id(),
    _col("hash", HashHex, unique=True),
    _col("hash_version", SmallInteger),
    _col("n_atoms", Integer),
    _col("numbers", LargeBinary),  # <u1 (n,), canonical atom order
    _col("positions", LargeBinary),  # <f8 (n, 3) Å
    _col("cell", LargeBinary, null=True),  # <f8 (3, 3) Å; NULL: no cell
    _col("pbc", SmallInteger),  # bit 0: x, 1: y, 2: z
    _col("nperiodic", SmallInteger),
    _col("charge", SmallInteger, default=0),
    _col("multiplicity", SmallInteger, default=1),
    # Derived from ``numbers`` by the writer (migration 0005). No foreign key, as for
    # ``run_id``: compositions are append-only and committed before the structures that use
    # them, and a per-row check would cost what the composition table saves. The index
    # ``(composition_id, id)`` serves the composition filters (``composition_id IN (...)``)
    # without reading the (wide) rows: PostgreSQL answers them by index-only scans.
    _col("composition_id", BigID),
    _col("source", Text, null=True),
    _col("info", JSON, null=True),
    # The ingest run that created the row (provenance). Deliberately no foreign key: the row
    # is written by that run's own ingest, which creates the run first and never deletes it,
    # and a per-row FK check is a large part of bulk-insert time (docs/performance.md). No
    # index either: every row of an ingest has the same value, the one query using it
    # (``_nnp_run``-style "made by" filters) is an OR with a label sub-query that scans
    # structures anyway, and the index is a noticeable share of SQLite ingest CPU.
    _col("run_id", BigID, null=True),
    _created(),
    Index(None, "composition_id", "id"),
)

levels_of_theory = Table(
    "levels_of_theory", metadata,
    _id(),
    _col("name", String(255), unique=True),  # canonical, lower case
    _col("method", String(128)),
    _col("basis", String(128), null=True),
    _col("program", String(128), null=True),
    _col("program_version", String(64), null=True),
    _col("keywords", JSON, null=True),
    _col("hash", String(64), unique=True),
    _col("fidelity_rank", Integer, default=0),
    _col("description", Text, null=True),
    _created(),
)

# Per-element atomic reference (self) energy of a level, eV.
reference_energies = Table(
    "reference_energies", metadata,
    _fk("level_id", "levels_of_theory.id", ondelete="CASCADE", primary_key=True),
    _col("z", SmallInteger, primary_key=True),
    _col("energy", Float),
    _col("method", String(16)),  # "set" or "fit"
    _fk("dataset_version_id", "dataset_versions.id", null=True),
    _fk("run_id", "runs.id", null=True),
)

# One computed result for (structure, level). Immutable but for status.
# At most one ``ok`` label per (structure, level) (a partial unique index); a correction
# retracts the old row and adds a new one that ``supersedes`` it.
labels = Table(
    "labels", metadata,
    _id(),
    _fk("structure_id", "structures.id"),
    _fk("level_id", "levels_of_theory.id"),
    _col("hash", HashHex),
    _col("energy", Float, null=True),  # eV
    _col("forces", LargeBinary, null=True),  # <f8 (n, 3) eV/Å
    _col("dipole", LargeBinary, null=True),  # <f8 (3,) e·Å
    _col("charges", LargeBinary, null=True),  # <f8 (n,) e
    _col("stress", LargeBinary, null=True),  # <f8 (6,) eV/Å³, Voigt
    _col("max_force", Float, null=True),  # eV/Å, max |F_i|, set at ingest
    _col("status", String(16), default="ok"),  # ok / failed / retracted
    _col("status_reason", Text, null=True),
    _col("source_unit", String(16), null=True),
    _fk("supersedes_id", "labels.id", null=True),
    # Provenance pointer written by the ingest run itself (see structures.run_id): no FK, no
    # index. structure_id, level_id and supersedes_id are checked references: declarative
    # foreign keys on SQLite; on PostgreSQL one set-based check per statement, the parents
    # being append-only (migrations 0002 and 0004, schema.PG_SET_CHECKED_FKS;
    # dataset_members likewise).
    _col("run_id", BigID, null=True),
    # The structure's composition, copied at write time (a structure's composition never
    # changes; migration 0008). With the index below, a filter that combines a level with
    # composition conditions meets both in ``labels`` alone, without visiting every
    # structure of the matching compositions.
    _col("composition_id", BigID),
    _created(),
    # At most one ok label per (structure, level); level first, so it also answers
    # "structures with an ok label at level L" (the _nnp_levels filters). Partial: WHERE
    # status = 'ok' on both backends, as the migrations create it. The predicate is not
    # repeated here: spelled as ``postgresql_where`` it would import SQLAlchemy's PostgreSQL
    # dialect into every process (~50 ms of a cold start on SQLite), and these tables never
    # create the schema (Alembic does; its comparison in tests/test_migrations.py passes).
    Index("uq_labels_ok", "level_id", "structure_id", unique=True),
    Index(None, "structure_id"),
    # Partial like uq_labels_ok (WHERE status = 'ok', created by migration 0008).
    Index("ix_labels_ok_level_composition", "level_id", "composition_id", "structure_id"),
)

datasets = Table(
    "datasets", metadata,
    _id(),
    _col("name", String(255), unique=True),
    _col("description", Text, null=True),
    _created(),
)

# An immutable dataset version: pinned labels, splits and a content hash.
dataset_versions = Table(
    "dataset_versions", metadata,
    _id(),
    _fk("dataset_id", "datasets.id"),
    _col("version", Integer),
    _col("hash", String(64), index=True),
    _col("filter", Text, null=True),
    _col("levels", JSON),  # canonical level names, in fidelity order
    _col("params", JSON, null=True),  # split fractions, group_by, seed, delta...
    _col("note", Text, null=True),
    _col("n_structures", Integer),
    _fk("run_id", "runs.id", null=True),
    _created(),
    UniqueConstraint("dataset_id", "version"),
)

# A pinned label in a version. split: 0 train, 1 validation, 2 test.
dataset_members = Table(
    "dataset_members", metadata,
    _fk("version_id", "dataset_versions.id", ondelete="CASCADE", primary_key=True),
    _fk("label_id", "labels.id", primary_key=True),
    _fk("structure_id", "structures.id"),
    _col("split", SmallInteger),
    Index(None, "label_id"),
    Index(None, "version_id", "structure_id"),
)

dataset_aliases = Table(
    "dataset_aliases", metadata,
    _fk("dataset_id", "datasets.id", primary_key=True),
    _col("alias", String(64), primary_key=True),
    _fk("version_id", "dataset_versions.id"),
    _created("updated_at"),
)

models = Table(
    "models", metadata,
    _id(),
    _col("name", String(255), unique=True),
    _col("description", Text, null=True),
    _created(),
)

model_versions = Table(
    "model_versions", metadata,
    _id(),
    _fk("model_id", "models.id"),
    _col("version", Integer),
    _col("architecture", String(128)),
    _col("config", JSON, null=True),
    _col("elements", JSON, null=True),
    _col("cutoff", Float, null=True),
    _col("units", JSON, null=True),
    _fk("level_id", "levels_of_theory.id", null=True),
    _fk("dataset_version_id", "dataset_versions.id", null=True, index=True),
    _fk("parent_id", "model_versions.id", null=True),
    _col("frozen", JSON, null=True),
    _col("metrics", JSON, null=True),
    _col("n_members", Integer, default=1),
    _col("status", String(16), default="ready"),  # ready / retracted
    _col("status_reason", Text, null=True),
    _fk("run_id", "runs.id", null=True),
    _created(),
    UniqueConstraint("model_id", "version"),
)

# A file of a model version in the artifact store (weights of member k, extras).
model_files = Table(
    "model_files", metadata,
    _id(),
    _fk("model_version_id", "model_versions.id", ondelete="CASCADE"),
    _col("name", String(255)),
    _col("role", String(16)),  # weights / extra
    _col("member_index", Integer, null=True),
    _col("sha256", String(64)),
    _col("size", BigInteger),
    _col("uri", Text),
    UniqueConstraint("model_version_id", "name"),
)

model_aliases = Table(
    "model_aliases", metadata,
    _fk("model_id", "models.id", primary_key=True),
    _col("alias", String(64), primary_key=True),
    _fk("version_id", "model_versions.id"),
    _created("updated_at"),
    _col("updated_by", String(128), null=True),
)
