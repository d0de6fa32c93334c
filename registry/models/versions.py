"""Model versions: register, alias, retract, show and list (pulling: :mod:`.pull`).

A model version is a set of files in the artifact store (``member_<k>.safetensors`` per
ensemble member, plus extras such as plots or a TorchScript export) and its metadata. Version
numbers are assigned under a lock on the ``models`` row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite transactions start with ``BEGIN IMMEDIATE``), so concurrent registrations
get 1, 2, 3... with no gap or duplicate. ``latest`` is automatic: the highest version that is
not retracted. Other aliases (``production``...) are set explicitly and each move is a
``model_alias`` run in provenance (who, when, from which version to which).

Verification checks (``pipelines.training.verify``) are stored with the version by
:func:`record_verification`, under ``metrics["verification"]`` (the latest record; every
record stays in its ``verify`` run): see docs/decisions/0011-verification-storage.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from sqlalchemy import func, select

from ..errors import BadInput, Conflict, NotFound
from ..store import lookups
from ..store.levels import level_row
from ..store.provenance import current_user
from ..store.refs import (
    LATEST,
    Ref,
    check_alias,
    check_int,
    check_name,
    check_text,
    fits_id,
    int_range,
    parse_ref,
)
from ..store.runs import add_edges, edge
from ..store.runs import run as run_scope
from ..store.schema import (
    DatasetMember,
    Model,
    ModelAlias,
    ModelFile,
    ModelVersion,
    Run,
    utcnow,
)
from ..times import iso_utc
from .info import MANIFEST, VERIFICATION, content_hash, model_version_dict, verified, version_files
from .weights import to_safetensors

FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")
_CHUNK = 10000  # bound parameters per IN (...) query


def member_file(k: int) -> str:
    return f"member_{k}.safetensors"


def _insert_ignore(s, table, values: dict, keys: list[str]) -> None:
    if s.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=keys))


def _check_json(value, what: str, kind=dict):
    if value is None:
        return None
    if not isinstance(value, kind):
        raise BadInput(f"{what} must be a {'JSON object' if kind is dict else 'list'}")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{what} is not JSON-serialisable: {exc}") from None


def _check_elements(elements) -> list[str] | None:
    if elements is None:
        return None
    from ..chem.elements import SYMBOLS, symbol_to_z

    if isinstance(elements, str | bytes | Mapping) or not hasattr(elements, "__iter__"):
        raise BadInput(f"elements must be a list of element symbols, got {elements!r}")
    zs = set()
    for e in elements:
        if isinstance(e, int) and not isinstance(e, bool):
            if not 1 <= e < len(SYMBOLS):
                raise BadInput(f"unknown atomic number {e} in elements")
            zs.add(e)
        else:
            zs.add(symbol_to_z(str(e)))
    return [SYMBOLS[z] for z in sorted(zs)]


def _check_metrics(metrics) -> dict | None:
    metrics = _check_json(metrics, "metrics")
    for k, v in (metrics or {}).items():
        if not isinstance(v, int | float | str | type(None) | dict | list):
            raise BadInput(f"metric {k!r} has an unsupported value {v!r}")
    return metrics


def _check_cutoff(cutoff) -> float | None:
    if cutoff is None:
        return None
    try:
        if isinstance(cutoff, bool | str | bytes):
            raise TypeError
        value = float(cutoff)
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"cutoff must be a number (Å), got {cutoff!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInput(f"cutoff must be positive and finite (Å), got {cutoff!r}")
    return value


def version_meta(*, architecture, config=None, elements=None, cutoff=None, units=None,
                 frozen=None, metrics=None) -> dict:
    """The checked metadata columns of a model version (register and bundle import)."""
    if not isinstance(architecture, str) or not architecture.strip():
        raise BadInput("architecture must be a non-empty string, e.g. 'ani'")
    return dict(
        architecture=check_text(architecture.strip(), "architecture",
                                ModelVersion.architecture),
        config=_check_json(config, "config"), elements=_check_elements(elements),
        cutoff=_check_cutoff(cutoff),
        units=_check_json(units, "units") or {"energy": "eV", "length": "Å"},
        frozen=_check_json(frozen, "frozen", list), metrics=_imported(_check_metrics(metrics)),
    )


def _imported(metrics: dict | None) -> dict | None:
    """A verification record arriving with metadata (a bundle) is kept for reading as
    ``source_verification`` and not trusted: the manifest is not signed and its run lives in
    another registry, so the version starts unverified here (``register_model`` refuses the key
    outright)."""
    if metrics and VERIFICATION in metrics:
        metrics = dict(metrics)
        metrics["source_verification"] = metrics.pop(VERIFICATION)
    return metrics


def _run_id(run) -> int | None:
    """The id of a RunHandle or run id (None for None); NotFound for an impossible id."""
    run_id = getattr(run, "id", run)
    if run_id is None:
        return None
    run_id = check_int(run_id, "run id", lo=None, hi=None)
    if not fits_id(run_id):
        raise NotFound(f"no run with id {run_id}")
    return run_id


def _members(weights) -> list:
    if weights is None:
        raise BadInput("a model version needs weights: one member (a dict of numpy arrays, "
                       "safetensors bytes or a .safetensors path) or a list of them")
    if isinstance(weights, Mapping | bytes | bytearray | memoryview | str | PathLike):
        return [weights]
    if not isinstance(weights, Sequence):
        return [weights]  # refused with a clear message by to_safetensors
    members = list(weights)
    if not members:
        raise BadInput("weights is an empty list: a model version needs at least one member")
    return members


def _extras(extras) -> list[tuple[str, bytes]]:
    out = []
    for name, content in (extras or {}).items():
        if not isinstance(name, str) or not FILE_RE.match(name) or name == MANIFEST \
                or re.fullmatch(r"member_\d+\.safetensors", name):
            raise BadInput(f"invalid extra file name {name!r}: a plain file name, not "
                           f"{MANIFEST} or member_<k>.safetensors")
        if isinstance(content, bytes | bytearray | memoryview):
            out.append((name, bytes(content)))
        elif isinstance(content, str | PathLike):
            p = Path(content)
            if not p.is_file():
                raise BadInput(f"extra file {name!r}: no such file {str(p)!r}")
            out.append((name, p.read_bytes()))
        else:
            raise BadInput(f"extra file {name!r} must be bytes or a path")
    return out


def _chunks(ids):
    ids = sorted({int(i) for i in ids})
    for lo in range(0, len(ids), _CHUNK):
        yield ids[lo:lo + _CHUNK]


# -- writing --------------------------------------------------------------------------------

def register_model(reg, name: str, weights=None, *, architecture: str,
                   config: dict | None = None, elements=None, cutoff: float | None = None,
                   units: dict | None = None, level: str | None = None,
                   dataset_version=None, parent: str | int | None = None,
                   frozen: list | None = None, metrics: dict | None = None,
                   extras: Mapping | None = None, run=None,
                   description: str | None = None) -> dict:
    """Register version N+1 of model ``name`` and return it (as :meth:`show_model`).

    ``weights``: one ensemble member or a list of them, each a dict of numpy arrays,
    safetensors bytes, or a path to a ``.safetensors`` file (torch state dicts: see
    ``pipelines.training.torch_io``). ``extras``: ``{file name: bytes or path}``. ``level``: a
    level-of-theory name; ``dataset_version``: an id or ``NAME[:V|@ALIAS]``; ``parent``: a
    model REF or version id. ``run``: the training run (a RunHandle or id); without one a
    ``register_model`` run is recorded. Files go to the artifact store first, then every
    row is written in one transaction.
    """
    check_name(name, "model name")
    check_text(description, "model description")
    if isinstance(metrics, Mapping) and VERIFICATION in metrics:
        raise BadInput(f"metrics key {VERIFICATION!r} is reserved: verification results are "
                       f"recorded by record_verification (`nnp models verify`)")
    meta = version_meta(architecture=architecture, config=config, elements=elements,
                        cutoff=cutoff, units=units, frozen=frozen, metrics=metrics)
    blobs = [(member_file(k), "weights", k, to_safetensors(m, f"weights of member {k}"))
             for k, m in enumerate(_members(weights))]
    blobs += [(n, "extra", None, data) for n, data in _extras(extras)]
    if any(x is not None for x in (level, dataset_version, parent, run)):
        check_links(reg, level, dataset_version, parent, run)  # bad refs: store nothing
    stored = [(n, role, k, *reg.artifacts.put(data)) for n, role, k, data in blobs]
    return insert_version(reg, name, stored, meta, level=level, description=description,
                                dataset_version=dataset_version, parent=parent, run=run)


def check_links(reg, level, dataset_version, parent, run) -> None:
    """NotFound unless every linked level, dataset version, parent and run exists."""
    with reg.session() as s:
        if level is not None:
            level_row(s, level)
        if dataset_version is not None:
            lookups.dataset_version(s, dataset_version)
        if parent is not None:
            lookups.model_version(s, parent)
        run_id = _run_id(run)
        if run_id is not None and s.get(Run, run_id) is None:
            raise NotFound(f"no run with id {run_id}")


def insert_version(reg, name, stored, meta, *, level=None, dataset_version=None,
                    parent=None, run=None, description=None, run_kind="register_model",
                    run_params=None, run_inputs=(), run_result=None) -> dict:
    """One transaction: lock the model row, number the version, write rows and edges."""
    with reg.session() as s:
        lock = select(Model).where(Model.name == name).with_for_update()
        model = s.scalar(lock)
        if model is None:
            _insert_ignore(s, Model.__table__, {"name": name, "description": description,
                                                "created_at": utcnow()}, ["name"])
            model = s.scalar(lock)
        level_id = canon = None
        if level is not None:
            lv = level_row(s, level)
            level_id, canon = lv.id, lv.name
        dv = None if dataset_version is None else lookups.dataset_version(s, dataset_version)[0]
        dv_ref = lookups.dataset_version_ref(s, dv.id) if dv is not None else None
        parent_mv = parent_ref = None
        if parent is not None:
            parent_model, parent_mv = lookups.model_version(s, parent)
            parent_ref = f"{parent_model.name}:{parent_mv.version}"
        run_id = _run_id(run)
        if run_id is not None and s.get(Run, run_id) is None:
            raise NotFound(f"no run with id {run_id}")
        version = (s.scalar(select(func.max(ModelVersion.version))
                            .where(ModelVersion.model_id == model.id)) or 0) + 1
        ref = f"{name}:{version}"
        files = sorted(({"name": n, "role": role, "member_index": k, "sha256": sha,
                         "size": size, "uri": uri} for n, role, k, sha, size, uri in stored),
                       key=lambda f: (f["role"] != "weights", f["member_index"] or 0,
                                      f["name"]))
        digest = content_hash(files)
        if run_id is None:
            inputs = list(run_inputs)
            if dv is not None:
                inputs.append(edge("dataset_version", dv.id, sha256=dv.hash,
                                   ref=dv_ref["ref"]))
            if level_id is not None:
                inputs.append(edge("level", level_id, ref=canon))
            if parent_mv is not None:
                inputs.append(edge("model_version", parent_mv.id, ref=parent_ref,
                                   role="parent"))
            with run_scope(reg, run_kind, {"model": name, "version": version,
                                           **(run_params or {})}, session=s) as own:
                own.inputs += inputs
                own.result = run_result or {}
            run_id = own.id
        mv = ModelVersion(model_id=model.id, version=version, level_id=level_id,
                          dataset_version_id=dv.id if dv else None,
                          parent_id=parent_mv.id if parent_mv else None,
                          n_members=sum(1 for f in files if f["role"] == "weights"),
                          run_id=int(run_id), **{"status": "ready", **meta})
        s.add(mv)
        s.flush()
        s.add_all(ModelFile(model_version_id=mv.id, **f) for f in files)
        add_edges(s, int(run_id), outputs=[edge("model_version", mv.id, ref=ref,
                                                sha256=digest)]
                  + [edge("file", None, ref=f["name"], sha256=f["sha256"], size=f["size"])
                     for f in files])
        info = {c: getattr(mv, c) for c in ("id", "version", "architecture", "config",
                                            "elements", "cutoff", "units", "frozen",
                                            "metrics", "n_members", "status",
                                            "status_reason", "run_id", "created_at")}
        return {**info, "name": name, "ref": ref, "description": model.description,
                "verified": verified(mv.metrics), "level": canon, "dataset_version": dv_ref,
                "parent": parent_ref,
                "aliases": ["latest"] if mv.status != "retracted" else [],
                "files": files, "size": sum(f["size"] for f in files),
                "content_hash": digest}


def set_model_alias(reg, ref: str, alias: str) -> dict:
    """Point ``alias`` of the model at the version ``ref`` names; recorded as a run."""
    check_alias(alias)
    if alias == LATEST:
        raise BadInput("'latest' is automatic (the highest version that is not retracted) "
                       "and cannot be set")
    with reg.session() as s:
        model, mv = lookups.model_version(s, ref)
        s.scalar(select(Model.id).where(Model.id == model.id).with_for_update())
        if mv.status == "retracted":
            raise Conflict(f"{model.name}:{mv.version} is retracted ({mv.status_reason}); "
                           f"refusing to point {alias!r} at it")
        row = s.get(ModelAlias, (model.id, alias))
        prev = None
        if row is not None:
            prev = s.scalar(select(ModelVersion.version)
                            .where(ModelVersion.id == row.version_id))
        user, now = current_user(), utcnow()
        with run_scope(reg, "model_alias", {"model": model.name, "alias": alias,
                                            "from_version": prev, "to_version": mv.version},
                       session=s) as r:
            r.consumed("model_version", mv.id, ref=f"{model.name}:{mv.version}")
            if row is None:
                s.add(ModelAlias(model_id=model.id, alias=alias, version_id=mv.id,
                                 updated_at=now, updated_by=user))
            else:
                row.version_id, row.updated_at, row.updated_by = mv.id, now, user
        return {"name": model.name, "alias": alias, "version": mv.version,
                "previous_version": prev, "updated_by": user, "updated_at": now,
                "run_id": r.id}


def retract_model(reg, ref: str, reason: str) -> dict:
    """Mark a version ``retracted`` with ``reason`` (pulls warn; ``strict`` pulls refuse)."""
    if not reason or not str(reason).strip():
        raise BadInput("retracting a model version needs a reason")
    check_text(str(reason), "retraction reason")
    r = parse_ref(ref)
    if r.version is None:
        raise BadInput(f"retract needs an explicit version NAME:VERSION, not {ref!r}")
    with reg.session() as s:
        model, mv = lookups.model_version(s, r)
        mv = s.get(ModelVersion, mv.id)  # the ORM object: its status changes below
        if mv.status == "retracted":
            raise Conflict(f"{model.name}:{mv.version} is already retracted "
                           f"({mv.status_reason})")
        with run_scope(reg, "model_retract", {"model": model.name, "version": mv.version,
                                              "reason": str(reason).strip()}, session=s) as r:
            r.consumed("model_version", mv.id, ref=f"{model.name}:{mv.version}")
            mv.status, mv.status_reason = "retracted", str(reason).strip()
        s.flush()
        return model_version_dict(s, model, mv)

def _check_verification(results) -> tuple[dict, bool]:
    """The checked record and its verdict: every check passed (and says so consistently)."""
    if not isinstance(results, Mapping):
        raise BadInput("verification results must be a mapping with a 'checks' mapping")
    checks = results.get("checks")
    if not isinstance(checks, Mapping) or not checks:
        raise BadInput("verification results need a non-empty 'checks' mapping "
                       "{name: {'value', 'threshold', 'passed', ...}}")
    for name, c in checks.items():
        if not isinstance(name, str) or not isinstance(c, Mapping):
            raise BadInput(f"verification check {name!r} must be a mapping named by a string")
        value, threshold, ok = c.get("value"), c.get("threshold"), c.get("passed")
        if not isinstance(ok, bool):
            raise BadInput(f"verification check {name!r}: 'passed' must be true or false")
        for what, x in (("threshold", threshold), ("value", value)):
            if x is None and what == "value":
                continue  # a value that could not be computed (non-finite)
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise BadInput(f"verification check {name!r}: {what} must be a finite number"
                               f"{' or null' if what == 'value' else ''}, got {x!r}")
        if ok and (value is None or value > threshold):
            raise BadInput(f"verification check {name!r} says passed but its value {value!r} "
                           f"is not within its threshold {threshold!r}")
    record = _check_json(dict(results), "verification results")
    return record, all(c["passed"] for c in checks.values())


def record_verification(reg, ref: str, results: Mapping, *, run=None) -> dict:
    """Store verification ``results`` (``{"checks": {name: {"value", "threshold", "passed",
    ...}}, ...}``, e.g. from ``pipelines.training.verify``) with the version ``ref``.

    The record goes under ``metrics["verification"]``, replacing an earlier one, with
    ``passed`` (every check passed; computed here, not taken from ``results``), the run id,
    the version's content hash and the time. ``run``: the ``verify`` run that computed them
    (a RunHandle or id; it gets the model version as an input); without one a ``verify`` run is
    recorded here. ``status`` is not changed: a failing version stays ``ready`` and is refused
    by strict pulls. One transaction; returns ``{"ref", **record}``.
    """
    record, passed = _check_verification(results)
    run_id = _run_id(run)
    with reg.session() as s:
        model, mv = lookups.model_version(s, ref)
        mv = s.scalar(select(ModelVersion).where(ModelVersion.id == mv.id)
                      .with_for_update().execution_options(populate_existing=True))
        exact = f"{model.name}:{mv.version}"
        digest = content_hash(version_files(s, mv.id))
        consumed = edge("model_version", mv.id, ref=exact, sha256=digest)
        failed = [k for k, c in record["checks"].items() if not c["passed"]]
        if run_id is None:
            with run_scope(reg, "verify", {"model": exact}, session=s) as own:
                own.inputs.append(consumed)
                own.result = {"model": exact, "passed": passed, "failed": failed}
            run_id = own.id
        else:
            if s.get(Run, run_id) is None:
                raise NotFound(f"no run with id {run_id}")
            add_edges(s, run_id, inputs=[consumed])
        record.update(passed=passed, run_id=int(run_id), content_hash=digest,
                      recorded_at=iso_utc(utcnow()))
        mv.metrics = {**(mv.metrics or {}), VERIFICATION: record}
        return {"ref": exact, **record}

# -- reading --------------------------------------------------------------------------------

def list_models(reg) -> list[dict]:
    """Every model with its number of versions, ``latest`` version and aliases."""
    with reg.session() as s:
        stats = {mid: (n, hi) for mid, n, hi in s.execute(
            select(ModelVersion.model_id, func.count(), func.max(ModelVersion.version))
            .group_by(ModelVersion.model_id))}
        latest = dict(s.execute(
            select(ModelVersion.model_id, func.max(ModelVersion.version))
            .where(ModelVersion.status != "retracted").group_by(ModelVersion.model_id)).all())
        aliases: dict[int, dict] = {}
        for mid, alias, ver in s.execute(
                select(ModelAlias.model_id, ModelAlias.alias, ModelVersion.version)
                .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)):
            aliases.setdefault(mid, {})[alias] = ver
        out = []
        for m in s.scalars(select(Model).order_by(Model.name)):
            n, hi = stats.get(m.id, (0, None))
            out.append({"name": m.name, "description": m.description, "versions": n,
                        "max_version": hi, "latest": latest.get(m.id),
                        "aliases": aliases.get(m.id, {}), "created_at": m.created_at})
        return out


def list_model_versions(reg, name: str, *, limit: int = 50,
                        before: int | None = None) -> list[dict]:
    """Versions of ``name``, newest first, ``limit`` per page (next page: ``before=``)."""
    limit = check_int(limit, "limit")
    if before is not None:
        before = check_int(before, "before", lo=None, hi=None)
        if before > int_range(ModelVersion.version)[1]:
            before = None  # every version is below it
        else:
            before = max(before, 1)  # none is below 1; keeps the bound in the column's range
    with reg.session() as s:
        model = s.scalar(select(Model).where(Model.name == check_name(name, "model name")))
        if model is None:
            raise NotFound(f"unknown model {name!r}")
        q = (select(ModelVersion.id, ModelVersion.version, ModelVersion.architecture,
                    ModelVersion.n_members, ModelVersion.status, ModelVersion.metrics,
                    ModelVersion.created_at)
             .where(ModelVersion.model_id == model.id)
             .order_by(ModelVersion.version.desc()).limit(limit))
        if before is not None:
            q = q.where(ModelVersion.version < before)
        rows = s.execute(q).all()
        aliases: dict[int, list] = {}
        for vid, alias in s.execute(select(ModelAlias.version_id, ModelAlias.alias)
                                    .where(ModelAlias.model_id == model.id)):
            aliases.setdefault(vid, []).append(alias)
        latest = s.scalar(select(func.max(ModelVersion.version))
                          .where(ModelVersion.model_id == model.id,
                                 ModelVersion.status != "retracted"))
        out = []
        for vid, ver, arch, nm, status, metrics, created in rows:
            al = sorted(aliases.get(vid, []))
            out.append({"name": name, "version": ver, "architecture": arch,
                        "n_members": nm, "status": status, "verified": verified(metrics),
                        "metrics": metrics,
                        "created_at": created,
                        "aliases": (["latest"] if ver == latest else []) + al})
        return out


def model_alias(reg, name: str, alias: str) -> int:
    """The version number ``NAME@alias`` points at."""
    with reg.session() as s:
        return lookups.model_version(s, Ref(check_name(name), None, check_alias(alias)))[1].version

# -- reverse lookups (used by `nnp impact`) ---------------------------------------------------

def models_using_dataset_versions(reg, version_ids) -> list[dict]:
    """Model versions trained on any of the dataset versions ``version_ids``."""
    out = []
    with reg.session() as s:
        for chunk in _chunks(version_ids):
            out += _model_rows(s, ModelVersion.dataset_version_id.in_(chunk))
    return sorted(out, key=lambda d: (d["name"], d["version"]))


def models_using_labels(reg, label_ids) -> list[dict]:
    """Model versions whose dataset version pins any of ``label_ids`` (e.g. retracted)."""
    dv_ids = set()
    with reg.session() as s:
        for chunk in _chunks(label_ids):
            dv_ids.update(s.scalars(select(DatasetMember.version_id).distinct()
                                    .where(DatasetMember.label_id.in_(chunk))))
    return models_using_dataset_versions(reg, dv_ids)


def _model_rows(s, where) -> list[dict]:
    rows = s.execute(select(ModelVersion.id, Model.name, ModelVersion.version,
                            ModelVersion.status, ModelVersion.dataset_version_id)
                     .join(Model, Model.id == ModelVersion.model_id).where(where)).all()
    return [{"id": i, "name": n, "version": v, "ref": f"{n}:{v}", "status": st,
             "dataset_version_id": dv} for i, n, v, st, dv in rows]
