"""Shared lookups of versioned things: dataset versions and model versions by reference.

A dataset or model version is looked up here and nowhere else (levels: :mod:`.levels`),
so every command accepts the same spellings and gives the same ``NotFound`` messages.

Core only (:mod:`.tables`): rows come back as read-only :class:`~sqlalchemy.engine.Row`
objects (attribute access like ORM objects); ``s`` is an ORM session or a Core connection. A
caller that changes a row loads its ORM object by id (``s.get(ModelVersion, mv.id)``).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Row

from ..errors import NotFound
from .refs import LATEST, Ref, fits_id, parse_ref
from .tables import dataset_aliases, dataset_versions, datasets, model_aliases, model_versions
from .tables import models as models_table

# The tables' columns, named like the ORM classes of the same tables.
Dataset, DatasetVersion, DatasetAlias = datasets.c, dataset_versions.c, dataset_aliases.c
Model, ModelVersion, ModelAlias = models_table.c, model_versions.c, model_aliases.c


def _known(s, column, limit: int | None = None) -> str:
    q = select(column).order_by(column)
    if limit:
        q = q.limit(limit)
    return ", ".join(map(str, s.scalars(q).all())) or "(none)"


def _row(s, table, row_id) -> Row | None:
    return s.execute(select(table).where(table.c.id == row_id)).first()


# -- dataset versions ---------------------------------------------------------------------------
def dataset_version(s, ref: str | int | Ref) -> tuple[Row, str]:
    """(version row, dataset name) for an id or ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``.

    A bare ``NAME`` is ``NAME@latest``; should the ``latest`` row be missing, the highest
    version is taken (``latest`` is by definition the newest version).
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        dv = _row(s, dataset_versions, ref) if fits_id(ref) else None
        if dv is None:
            raise NotFound(f"no dataset version with id {ref}")
        return dv, s.scalar(select(Dataset.name).where(Dataset.id == dv.dataset_id))
    r = ref if isinstance(ref, Ref) else parse_ref(str(ref))
    ds = s.execute(select(datasets).where(Dataset.name == r.name)).first()
    if ds is None:
        raise NotFound(f"unknown dataset {r.name!r}; datasets: {_known(s, Dataset.name, 20)}")
    versions = select(dataset_versions).where(DatasetVersion.dataset_id == ds.id)
    if r.version is not None:
        dv = s.execute(versions.where(DatasetVersion.version == r.version)).first()
        if dv is None:
            have = s.scalars(select(DatasetVersion.version)
                             .where(DatasetVersion.dataset_id == ds.id)
                             .order_by(DatasetVersion.version)).all()
            raise NotFound(f"no dataset version {r}: dataset {r.name!r} has no version "
                           f"{r.version}; versions: {', '.join(map(str, have)) or '(none)'}")
        return dv, ds.name
    dv = s.execute(versions.join(dataset_aliases, DatasetAlias.version_id == DatasetVersion.id)
                   .where(DatasetAlias.dataset_id == ds.id, DatasetAlias.alias == r.alias)).first()
    if dv is None and r.alias == LATEST:
        dv = s.execute(versions.order_by(DatasetVersion.version.desc()).limit(1)).first()
    if dv is None:
        have = s.scalars(select(DatasetAlias.alias).where(DatasetAlias.dataset_id == ds.id)
                         .order_by(DatasetAlias.alias)).all()
        raise NotFound(f"no dataset version {r}: dataset {r.name!r} has no alias "
                       f"{r.alias!r}; aliases: {', '.join(have) or '(none)'}")
    return dv, ds.name


def dataset_version_ref(s, dv_id: int | None) -> dict | None:
    """{"id", "ref", "hash"} of a dataset version id (None for None)."""
    if dv_id is None:
        return None
    row = s.execute(select(Dataset.name, DatasetVersion.version, DatasetVersion.hash)
                    .join(datasets, Dataset.id == DatasetVersion.dataset_id)
                    .where(DatasetVersion.id == dv_id)).first()
    return {"id": dv_id, "ref": f"{row[0]}:{row[1]}", "hash": row[2]} if row else None


# -- model versions -----------------------------------------------------------------------------
def model_version(s, ref: str | int | Ref) -> tuple[Row, Row]:
    """(model row, version row) for a version id or ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``.

    ``latest`` is the highest version that is not retracted. NotFound names what is missing.
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        mv = _row(s, model_versions, ref) if fits_id(ref) else None
        if mv is None:
            raise NotFound(f"no model version with id {ref}")
        return _row(s, models_table, mv.model_id), mv
    r = ref if isinstance(ref, Ref) else parse_ref(str(ref))
    q = select(Model.id, ModelVersion.id) \
        .join(model_versions, ModelVersion.model_id == Model.id).where(Model.name == r.name)
    if r.version is not None:
        q = q.where(ModelVersion.version == r.version)
    elif r.alias == LATEST:
        q = q.where(ModelVersion.status != "retracted") \
            .order_by(ModelVersion.version.desc()).limit(1)
    else:
        q = q.join(model_aliases, (ModelAlias.model_id == Model.id)
                   & (ModelAlias.version_id == ModelVersion.id)) \
            .where(ModelAlias.alias == r.alias)
    row = s.execute(q).first()
    if row is not None:
        return _row(s, models_table, row[0]), _row(s, model_versions, row[1])
    model = s.execute(select(models_table).where(Model.name == r.name)).first()
    if model is None:
        raise NotFound(f"unknown model {r.name!r}; known models: {_known(s, Model.name, 20)}")
    n = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
    if not n:
        raise NotFound(f"model {r.name!r} has no versions")
    if r.version is not None:
        raise NotFound(f"model {r.name!r} has no version {r.version} (versions 1..{n})")
    if r.alias == LATEST:
        raise NotFound(f"model {r.name!r} has no version that is not retracted")
    aliases = s.scalars(select(ModelAlias.alias).where(ModelAlias.model_id == model.id)
                        .order_by(ModelAlias.alias)).all()
    raise NotFound(f"model {r.name!r} has no alias {r.alias!r}; its aliases: "
                   f"{', '.join(['latest', *aliases])}")
