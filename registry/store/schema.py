"""The ORM classes (SQLAlchemy 2 typed ORM), mapped onto the Core tables of :mod:`.tables`.
Alembic migrations in ``migrations/`` own the schema.

The columns of the core tables are declared once, in :mod:`.tables` (add a column there); the
annotations below type the attributes. Code that only reads (queries, counts, stats, pulls)
uses the Core tables and never imports this module, so a cold command line skips the ORM.
Arrays are packed little-endian bytes (see :mod:`registry.chem.arrays`); times are UTC.
"""

from __future__ import annotations

from datetime import datetime

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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from . import tables
from .tables import BigID, HashHex, utcnow

__all__ = ["BigID", "HashHex", "utcnow"]  # re-exported: callers import them from here


class Base(DeclarativeBase):
    metadata = tables.metadata
    type_annotation_map = {dict: JSON, list: JSON}


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class Run(Base):
    """A provenance run: ingest, dataset creation, training, labeling, analysis..."""

    __table__ = tables.runs
    id: Mapped[int]
    kind: Mapped[str]
    status: Mapped[str]  # see store.runs.STATES
    params: Mapped[dict | None]
    result: Mapped[dict | None]
    code_version: Mapped[str | None]
    git_commit: Mapped[str | None]
    git_dirty: Mapped[bool | None]
    environment: Mapped[dict | None]
    user: Mapped[str | None]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    error: Mapped[str | None]


class RunEntity(Base):
    """A lineage edge: a run consumed (``input``) or produced (``output``) an entity
    (``entity_type``, ``entity_id``; ``ref`` names files/URIs, ``sha256`` pins bytes)."""

    __table__ = tables.run_entities
    id: Mapped[int]
    run_id: Mapped[int]
    role: Mapped[str]
    entity_type: Mapped[str]
    entity_id: Mapped[int | None]
    ref: Mapped[str | None]
    sha256: Mapped[str | None]
    meta: Mapped[dict | None]


class Composition(Base):
    """A distinct composition (element counts), named by its Hill formula."""

    __table__ = tables.compositions
    id: Mapped[int]
    formula_hill: Mapped[str]
    formula_reduced: Mapped[str]
    formula_anonymous: Mapped[str]
    n_atoms: Mapped[int]
    nelements: Mapped[int]
    element_set_id: Mapped[int]


class ElementSet(Base):
    """A distinct set of elements, as bit masks of atomic numbers (Z 1-63, Z 64-126)."""

    __table__ = tables.element_sets
    id: Mapped[int]
    mask_lo: Mapped[int]
    mask_hi: Mapped[int]
    nelements: Mapped[int]


class CompositionElement(Base):
    """Element counts of a composition, keyed ``(z, composition_id)``."""

    __table__ = tables.composition_elements
    z: Mapped[int]
    composition_id: Mapped[int]
    count: Mapped[int]


class Structure(Base):
    __table__ = tables.structures
    id: Mapped[int]
    hash: Mapped[str]
    hash_version: Mapped[int]
    n_atoms: Mapped[int]
    numbers: Mapped[bytes]
    positions: Mapped[bytes]
    cell: Mapped[bytes | None]
    pbc: Mapped[int]
    nperiodic: Mapped[int]
    charge: Mapped[int]
    multiplicity: Mapped[int]
    composition_id: Mapped[int]
    source: Mapped[str | None]
    info: Mapped[dict | None]
    run_id: Mapped[int | None]
    created_at: Mapped[datetime]


class LevelOfTheory(Base):
    __table__ = tables.levels_of_theory
    id: Mapped[int]
    name: Mapped[str]
    method: Mapped[str]
    basis: Mapped[str | None]
    program: Mapped[str | None]
    program_version: Mapped[str | None]
    keywords: Mapped[dict | None]
    hash: Mapped[str]
    fidelity_rank: Mapped[int]
    description: Mapped[str | None]
    created_at: Mapped[datetime]


class ReferenceEnergy(Base):
    """Per-element atomic reference (self) energy of a level, eV."""

    __table__ = tables.reference_energies
    level_id: Mapped[int]
    z: Mapped[int]
    energy: Mapped[float]
    method: Mapped[str]
    dataset_version_id: Mapped[int | None]
    run_id: Mapped[int | None]


class Label(Base):
    """One computed result for (structure, level). Immutable but for status."""

    __table__ = tables.labels
    id: Mapped[int]
    structure_id: Mapped[int]
    level_id: Mapped[int]
    hash: Mapped[str]
    energy: Mapped[float | None]
    forces: Mapped[bytes | None]
    dipole: Mapped[bytes | None]
    charges: Mapped[bytes | None]
    stress: Mapped[bytes | None]
    max_force: Mapped[float | None]
    status: Mapped[str]
    status_reason: Mapped[str | None]
    source_unit: Mapped[str | None]
    supersedes_id: Mapped[int | None]
    run_id: Mapped[int | None]
    composition_id: Mapped[int]
    created_at: Mapped[datetime]


# Foreign keys of the ORM that PostgreSQL enforces with set-based statement triggers instead
# of per-row constraint triggers, their parents being append-only (migrations 0002, 0004).
PG_SET_CHECKED_FKS = (
    "fk_labels_structure_id_structures", "fk_labels_level_id_levels_of_theory",
    "fk_dataset_members_label_id_labels", "fk_dataset_members_structure_id_structures",
    "fk_dataset_members_version_id_dataset_versions", "fk_labels_supersedes_id_labels",
)


class Dataset(Base):
    __table__ = tables.datasets
    id: Mapped[int]
    name: Mapped[str]
    description: Mapped[str | None]
    created_at: Mapped[datetime]


class DatasetVersion(Base):
    """An immutable dataset version: pinned labels, splits and a content hash."""

    __table__ = tables.dataset_versions
    id: Mapped[int]
    dataset_id: Mapped[int]
    version: Mapped[int]
    hash: Mapped[str]
    filter: Mapped[str | None]
    levels: Mapped[list]
    params: Mapped[dict | None]
    note: Mapped[str | None]
    n_structures: Mapped[int]
    run_id: Mapped[int | None]
    created_at: Mapped[datetime]


class DatasetMember(Base):
    """A pinned label in a version. split: 0 train, 1 validation, 2 test."""

    __table__ = tables.dataset_members
    version_id: Mapped[int]
    label_id: Mapped[int]
    structure_id: Mapped[int]
    split: Mapped[int]


class DatasetAlias(Base):
    __table__ = tables.dataset_aliases
    dataset_id: Mapped[int]
    alias: Mapped[str]
    version_id: Mapped[int]
    updated_at: Mapped[datetime]


class Model(Base):
    __table__ = tables.models
    id: Mapped[int]
    name: Mapped[str]
    description: Mapped[str | None]
    created_at: Mapped[datetime]


class ModelVersion(Base):
    __table__ = tables.model_versions
    id: Mapped[int]
    model_id: Mapped[int]
    version: Mapped[int]
    architecture: Mapped[str]
    config: Mapped[dict | None]
    elements: Mapped[list | None]
    cutoff: Mapped[float | None]
    units: Mapped[dict | None]
    level_id: Mapped[int | None]
    dataset_version_id: Mapped[int | None]
    parent_id: Mapped[int | None]
    frozen: Mapped[list | None]
    metrics: Mapped[dict | None]
    n_members: Mapped[int]
    status: Mapped[str]
    status_reason: Mapped[str | None]
    run_id: Mapped[int | None]
    created_at: Mapped[datetime]


class ModelFile(Base):
    """A file of a model version in the artifact store (weights of member k, extras)."""

    __table__ = tables.model_files
    id: Mapped[int]
    model_version_id: Mapped[int]
    name: Mapped[str]
    role: Mapped[str]
    member_index: Mapped[int | None]
    sha256: Mapped[str]
    size: Mapped[int]
    uri: Mapped[str]


class ModelAlias(Base):
    __table__ = tables.model_aliases
    model_id: Mapped[int]
    alias: Mapped[str]
    version_id: Mapped[int]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str | None]


# -- active learning (migration 0007) ----------------------------------------------------------
class ALCampaign(Base):
    """An active-learning campaign: its settings, seeds, reference level and state.

    ``state``: running / stopped / finished / failed as last written; a ``running`` campaign
    whose run (``run_id``) is no longer alive reads as ``stopped``
    (:mod:`registry.active_learning.campaigns`). ``seeds``: structure ids of the seed
    structures, in the order of the seeds file."""

    __tablename__ = "al_campaigns"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="running")
    labeler: Mapped[str] = mapped_column(String(255))
    level_id: Mapped[int] = mapped_column(ForeignKey("levels_of_theory.id"))
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    settings: Mapped[dict]
    seeds: Mapped[list]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    stop_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ALIteration(Base):
    """One iteration of a campaign, advanced phase by phase (``phase``: train, sample,
    select, label, ingest, dataset, done), so a killed process resumes where it stopped."""

    __tablename__ = "al_iterations"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("al_campaigns.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16), default="train")
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    train_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    threshold: Mapped[float | None] = mapped_column(Float)
    fraction_above: Mapped[float | None] = mapped_column(Float)
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    new_dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"))
    metrics: Mapped[dict | None]
    seconds: Mapped[dict | None]  # wall time per phase
    started_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("campaign_id", "iteration"),)


class ALTrajectory(Base):
    """One sampling trajectory of an iteration (MD or normal-mode sampling from a seed at a
    temperature), with why it stopped early (``stop_reason``; null when it ran its steps)."""

    __tablename__ = "al_trajectories"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    iteration_id: Mapped[int] = mapped_column(
        ForeignKey("al_iterations.id", ondelete="CASCADE"))
    trajectory: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)  # index into the campaign's seeds
    seed_structure_id: Mapped[int] = mapped_column(ForeignKey("structures.id"))
    temperature: Mapped[float] = mapped_column(Float)  # K
    md_seed: Mapped[int] = mapped_column(BigInteger)
    sampler: Mapped[str] = mapped_column(String(16))
    steps: Mapped[int] = mapped_column(Integer)
    steps_done: Mapped[int] = mapped_column(Integer)
    n_frames: Mapped[int] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("iteration_id", "trajectory"),)


class ALCandidate(Base):
    """A sampled frame: its geometry (packed like ``structures``), the committee
    disagreement ``rho`` (ensemble energy std / √atoms, eV), whether it was selected, and its
    label (``label_status`` pending / ok / failed with ``label_message``). The label's
    energy and forces are kept here until ingested; ``structure_id``/``label_id`` then point
    at the stored rows."""

    __tablename__ = "al_candidates"
    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    iteration_id: Mapped[int] = mapped_column(
        ForeignKey("al_iterations.id", ondelete="CASCADE"))
    trajectory: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    temperature: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(HashHex)  # identity hash of the geometry
    n_atoms: Mapped[int] = mapped_column(Integer)
    numbers: Mapped[bytes] = mapped_column(LargeBinary)  # <u1 (n,)
    positions: Mapped[bytes] = mapped_column(LargeBinary)  # <f8 (n, 3) Å
    cell: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (3, 3) Å
    pbc: Mapped[int] = mapped_column(SmallInteger)  # bit 0: x, 1: y, 2: z
    charge: Mapped[int] = mapped_column(SmallInteger, default=0)
    multiplicity: Mapped[int] = mapped_column(SmallInteger, default=1)
    rho: Mapped[float | None] = mapped_column(Float)  # eV / √atom
    energy: Mapped[float | None] = mapped_column(Float)  # ensemble mean, eV
    energy_std: Mapped[float | None] = mapped_column(Float)  # eV
    threshold: Mapped[float | None] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(Boolean, default=False)
    label_status: Mapped[str | None] = mapped_column(String(16))
    label_message: Mapped[str | None] = mapped_column(Text)
    label_energy: Mapped[float | None] = mapped_column(Float)  # eV
    label_forces: Mapped[bytes | None] = mapped_column(LargeBinary)  # <f8 (n, 3) eV/Å
    label_seconds: Mapped[float | None] = mapped_column(Float)
    labeled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    structure_id: Mapped[int | None] = mapped_column(ForeignKey("structures.id"))
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"))
    __table_args__ = (UniqueConstraint("iteration_id", "trajectory", "step"),
                      Index(None, "iteration_id", "label_status"))
