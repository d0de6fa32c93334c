"""Shared lookups of versioned things: dataset versions and model versions by reference.

A dataset or model version is looked up here and nowhere else (levels: :mod:`.levels`),
so every command accepts the same spellings and gives the same ``NotFound`` messages.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..errors import NotFound
from .refs import LATEST, Ref, fits_id, parse_ref
from .schema import (
    Dataset,
    DatasetAlias,
    DatasetVersion,
    Model,
    ModelAlias,
    ModelVersion,
)


def _known(s, column, limit: int | None = None) -> str:
    q = select(column).order_by(column)
    if limit:
        q = q.limit(limit)
    return ", ".join(map(str, s.scalars(q).all())) or "(none)"


# -- dataset versions ---------------------------------------------------------------------------
def dataset_version(s, ref: str | int | Ref) -> tuple[DatasetVersion, str]:
    """(version row, dataset name) for an id or ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``.

    A bare ``NAME`` is ``NAME@latest``; should the ``latest`` row be missing, the highest
    version is taken (``latest`` is by definition the newest version).
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        dv = s.get(DatasetVersion, ref) if fits_id(ref) else None
        if dv is None:
            raise NotFound(f"no dataset version with id {ref}")
        return dv, s.scalar(select(Dataset.name).where(Dataset.id == dv.dataset_id))
    r = ref if isinstance(ref, Ref) else parse_ref(str(ref))
    ds = s.scalar(select(Dataset).where(Dataset.name == r.name))
    if ds is None:
        raise NotFound(f"unknown dataset {r.name!r}; datasets: {_known(s, Dataset.name, 20)}")
    versions = select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
    if r.version is not None:
        dv = s.scalar(versions.where(DatasetVersion.version == r.version))
        if dv is None:
            have = s.scalars(select(DatasetVersion.version)
                             .where(DatasetVersion.dataset_id == ds.id)
                             .order_by(DatasetVersion.version)).all()
            raise NotFound(f"no dataset version {r}: dataset {r.name!r} has no version "
                           f"{r.version}; versions: {', '.join(map(str, have)) or '(none)'}")
        return dv, ds.name
    dv = s.scalar(versions.join(DatasetAlias, DatasetAlias.version_id == DatasetVersion.id)
                  .where(DatasetAlias.dataset_id == ds.id, DatasetAlias.alias == r.alias))
    if dv is None and r.alias == LATEST:
        dv = s.scalar(versions.order_by(DatasetVersion.version.desc()).limit(1))
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
                    .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                    .where(DatasetVersion.id == dv_id)).first()
    return {"id": dv_id, "ref": f"{row[0]}:{row[1]}", "hash": row[2]} if row else None


# -- model versions -----------------------------------------------------------------------------
def model_version(s, ref: str | int | Ref) -> tuple[Model, ModelVersion]:
    """(Model, ModelVersion) for a version id or ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``.

    ``latest`` is the highest version that is not retracted. NotFound names what is missing.
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        mv = s.get(ModelVersion, ref) if fits_id(ref) else None
        if mv is None:
            raise NotFound(f"no model version with id {ref}")
        return s.get(Model, mv.model_id), mv
    r = ref if isinstance(ref, Ref) else parse_ref(str(ref))
    q = select(Model, ModelVersion).join(ModelVersion, ModelVersion.model_id == Model.id) \
        .where(Model.name == r.name)
    if r.version is not None:
        q = q.where(ModelVersion.version == r.version)
    elif r.alias == LATEST:
        q = q.where(ModelVersion.status != "retracted") \
            .order_by(ModelVersion.version.desc()).limit(1)
    else:
        q = q.join(ModelAlias, (ModelAlias.model_id == Model.id)
                   & (ModelAlias.version_id == ModelVersion.id)) \
            .where(ModelAlias.alias == r.alias)
    row = s.execute(q).first()
    if row is not None:
        return row[0], row[1]
    model = s.scalar(select(Model).where(Model.name == r.name))
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
