"""A model version as people and pulls see it: ``nnp models show``, the pull manifest, the
content hash and the verification verdict.

Core reads only (the tables of :mod:`registry.store.tables`, with an ORM session or a Core
connection alike), so a cold ``nnp models pull`` never imports the ORM. Registering, aliasing,
retracting and recording verifications: :mod:`.versions`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Row

from ..store import lookups
from ..store.tables import levels_of_theory, model_aliases, model_files, model_versions, models
from ..store.tables import run_entities as edges_table

VERIFICATION = "verification"  # the metrics key that holds the latest verification record
MANIFEST = "model.json"


def content_hash(files: Sequence[Mapping]) -> str:
    """A version's content hash: sha256 over its sorted ``name sha256`` lines."""
    lines = sorted(f"{f['name']} {f['sha256']}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def version_files(s, mv_id: int) -> list[dict]:
    """The files of a version: name, role, member index, sha256, size, uri."""
    f = model_files.c
    rows = s.execute(select(f.name, f.role, f.member_index, f.sha256, f.size, f.uri)
                     .where(f.model_version_id == mv_id)
                     .order_by(f.role.desc(), f.member_index, f.name))
    return [r._asdict() for r in rows]


def model_version_dict(s, model: Row, mv: Row, *, files: bool = True) -> dict:
    """Everything ``nnp models show`` prints about a version (``model``, ``mv``: rows or ORM
    objects of ``models`` and ``model_versions``)."""
    ma, v, m = model_aliases.c, model_versions.c, models.c
    aliases = s.scalars(select(ma.alias).where(ma.version_id == mv.id)
                        .order_by(ma.alias)).all()
    latest = s.scalar(select(func.max(v.version))
                      .where(v.model_id == model.id, v.status != "retracted"))
    if latest == mv.version:
        aliases = ["latest", *aliases]
    lot = levels_of_theory.c
    level = s.scalar(select(lot.name).where(lot.id == mv.level_id)) if mv.level_id else None
    parent = None
    if mv.parent_id:
        row = s.execute(select(m.name, v.version).join(model_versions, v.model_id == m.id)
                        .where(v.id == mv.parent_id)).first()
        parent = f"{row[0]}:{row[1]}"
    dv_ref = lookups.dataset_version_ref(s, mv.dataset_version_id)
    if dv_ref is None or parent is None:
        dv_ref, parent = recorded_links(s, mv, dv_ref, parent)
    out = {
        "id": mv.id, "name": model.name, "version": mv.version,
        "ref": f"{model.name}:{mv.version}", "description": model.description,
        "architecture": mv.architecture, "config": mv.config, "elements": mv.elements,
        "cutoff": mv.cutoff, "units": mv.units, "level": level,
        "dataset_version": dv_ref, "parent": parent,
        "frozen": mv.frozen, "metrics": mv.metrics, "n_members": mv.n_members,
        "status": mv.status, "status_reason": mv.status_reason,
        "verified": verified(mv.metrics), "run_id": mv.run_id,
        "created_at": mv.created_at, "aliases": aliases,
    }
    if files:
        out["files"] = version_files(s, mv.id)
        out["size"] = sum(f["size"] for f in out["files"])
        out["content_hash"] = content_hash(out["files"])
    return out


def recorded_links(s, mv: Row, dv_ref, parent):
    """The dataset version and parent a version's own run recorded when this registry does not
    hold them (an imported bundle): ref and hash, marked ``in_registry: False``."""
    if mv.run_id is None:
        return dv_ref, parent
    e = edges_table.c
    edges = s.execute(select(e.entity_type, e.entity_id, e.ref, e.sha256)
                      .where(e.run_id == mv.run_id, e.role == "input",
                             e.entity_type.in_(("dataset_version", "model_version")))
                      .order_by(e.id)).all()
    for kind, entity_id, ref, sha in edges:
        if kind == "dataset_version" and dv_ref is None and (ref or sha):
            dv_ref = {"id": None, "ref": ref, "hash": sha, "in_registry": False}
        elif kind == "model_version" and parent is None and entity_id is None and ref:
            parent = ref
    return dv_ref, parent


def verified(metrics) -> bool | None:
    """True / False: the latest verification passed / failed; None: never verified."""
    rec = (metrics or {}).get(VERIFICATION) if isinstance(metrics, Mapping) else None
    return None if not isinstance(rec, Mapping) else bool(rec.get("passed"))


def verification_failures(record: Mapping) -> str:
    """``forces vs −∇E 0.3 > 0.01 eV/Å; ...``: the failed checks of a record, in one line."""
    parts = []
    for name, c in (record.get("checks") or {}).items():
        if c.get("passed"):
            continue
        value = "non-finite" if c.get("value") is None else f"{c['value']:.3g}"
        parts.append(f"{c.get('label') or name} {value} > {c['threshold']:.3g} "
                     f"{c.get('unit') or ''}".rstrip())
    return "; ".join(parts) or "no check passed"


def show_model(reg, ref: str) -> dict:
    """A version: config, metrics, dataset version, parent, aliases, files, sizes, hashes."""
    with reg.connect() as s:
        return model_version_dict(s, *lookups.model_version(s, ref))
