"""Lineage of a model version, walked back through provenance.

model version -> training run -> dataset version (filter, pinned labels, splits) -> label runs
(level of theory, program, settings) -> ingest runs (files and their sha256). Each link may be
absent (a model registered without a dataset version, an imported model whose dataset is in
another registry...): the walk then records what is missing in ``missing`` and goes on.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..store.levels import level_dict
from ..store.lookups import model_version
from ..store.schema import (
    Dataset,
    DatasetMember,
    DatasetVersion,
    Label,
    LevelOfTheory,
    Run,
    RunEntity,
    Structure,
)
from .info import model_version_dict

MAX_EDGES = 200  # per run and role; the count of the rest is reported
_SPLITS = {0: "train", 1: "validation", 2: "test"}


def run_dict(s, run_id: int | None) -> dict | None:
    """A run with its code version, environment and (up to MAX_EDGES) lineage edges."""
    if run_id is None:
        return None
    run = s.get(Run, run_id)
    if run is None:
        return None
    out = {c: getattr(run, c) for c in ("id", "kind", "status", "params", "result", "user",
                                        "started_at", "ended_at", "error", "environment")}
    out["code"] = {"version": run.code_version, "git_commit": run.git_commit,
                   "git_dirty": run.git_dirty}
    for role in ("input", "output"):
        where = (RunEntity.run_id == run_id) & (RunEntity.role == role)
        n = s.scalar(select(func.count()).select_from(RunEntity).where(where))
        edges = s.scalars(select(RunEntity).where(where).order_by(RunEntity.id)
                          .limit(MAX_EDGES)).all()
        out[role + "s"] = [{k: getattr(e, k) for k in ("entity_type", "entity_id", "ref",
                                                        "sha256", "meta")} for e in edges]
        if n > len(edges):
            out[role + "s_omitted"] = n - len(edges)
    return out


def _files(run: dict) -> list[dict]:
    return [{"name": e["ref"], "sha256": e["sha256"], **(e["meta"] or {})}
            for e in run["inputs"] if e["entity_type"] == "file"]


def _levels(s, ids) -> dict[int, dict]:
    ids = [i for i in ids if i is not None]
    if not ids:
        return {}
    rows = s.scalars(select(LevelOfTheory).where(LevelOfTheory.id.in_(ids))).all()
    return {lv.id: level_dict(lv) for lv in rows}


def dataset_lineage(s, dv_id: int) -> dict:
    """A dataset version: its creation run, pinned labels, label runs and ingest runs."""
    dv = s.get(DatasetVersion, dv_id)
    name = s.scalar(select(Dataset.name).where(Dataset.id == dv.dataset_id))
    out = {"id": dv.id, "ref": f"{name}:{dv.version}", "hash": dv.hash, "filter": dv.filter,
           "levels": dv.levels, "params": dv.params, "note": dv.note,
           "n_structures": dv.n_structures, "created_at": dv.created_at,
           "creation_run": run_dict(s, dv.run_id)}
    members = select(DatasetMember.label_id, DatasetMember.structure_id, DatasetMember.split) \
        .where(DatasetMember.version_id == dv_id).subquery()
    out["splits"] = {_SPLITS.get(k, str(k)): n for k, n in s.execute(
        select(members.c.split, func.count()).group_by(members.c.split).order_by(members.c.split))}
    by_run = s.execute(
        select(Label.run_id, Label.level_id, Label.status, func.count())
        .join(members, members.c.label_id == Label.id)
        .group_by(Label.run_id, Label.level_id, Label.status)).all()
    levels = _levels(s, {lid for _, lid, _, _ in by_run})
    labels: dict[tuple, dict] = {}
    runs: dict = {}
    for run_id, lid, status, n in by_run:
        key = levels[lid]["name"] if lid in levels else None
        labels.setdefault(key, {})[status] = labels.get(key, {}).get(status, 0) + n
        runs.setdefault(run_id, {}).setdefault(lid, 0)
        runs[run_id][lid] += n
    out["labels"] = {"total": sum(n for *_, n in by_run), "by_level": labels}
    out["retracted_labels"] = sum(n for _, _, st, n in by_run if st == "retracted")
    out["label_runs"] = []
    for run_id in sorted(runs, key=lambda r: (r is None, r)):
        run = run_dict(s, run_id) or {"id": None, "kind": "(no run recorded)"}
        run["levels"] = [dict(levels[lid], n_labels=n) if lid in levels else {"n_labels": n}
                         for lid, n in runs[run_id].items()]
        run["files"] = _files(run) if run.get("inputs") else []
        out["label_runs"].append(run)
    ingest = s.execute(
        select(Structure.run_id, func.count())
        .join(members, members.c.structure_id == Structure.id)
        .group_by(Structure.run_id)).all()
    out["ingest_runs"] = []
    for run_id, n in sorted(ingest, key=lambda r: (r[0] is None, r[0])):
        run = run_dict(s, run_id) or {"id": None, "kind": "(no run recorded)", "inputs": []}
        run["n_structures"] = n
        run["files"] = _files(run)
        out["ingest_runs"].append(run)
    return out


def lineage(reg, ref: str) -> dict:
    """Everything a model version was made from (see the module docstring)."""
    with reg.session() as s:
        model, mv = model_version(s, ref)
        out = {"ref": f"{model.name}:{mv.version}", "model": model_version_dict(s, model, mv),
               "missing": []}
        run = out["training_run"] = run_dict(s, mv.run_id)
        if run is None:
            out["missing"].append("no training run recorded")
        out["level"] = level_dict(s.get(LevelOfTheory, mv.level_id)) if mv.level_id \
            else None
        if mv.level_id is None:
            out["missing"].append("no level of theory recorded")
        out["parent"] = None
        if mv.parent_id:
            pm, pv = model_version(s, mv.parent_id)
            out["parent"] = {"ref": f"{pm.name}:{pv.version}", "status": pv.status,
                             "architecture": pv.architecture,
                             "dataset_version_id": pv.dataset_version_id}
        dv_id = mv.dataset_version_id
        recorded = [e for e in (run or {}).get("inputs", [])
                    if e["entity_type"] == "dataset_version"]
        if dv_id is None:
            dv_id = next((e["entity_id"] for e in recorded if e["entity_id"] is not None
                          and s.get(DatasetVersion, e["entity_id"]) is not None), None)
        if dv_id is not None:
            out["dataset_version"] = dataset_lineage(s, dv_id)
        elif recorded:
            e = recorded[0]
            out["dataset_version"] = {"ref": e["ref"], "hash": e["sha256"],
                                      "in_registry": False}
            out["missing"].append("dataset version is not in this registry (hash recorded)")
        else:
            out["dataset_version"] = None
            out["missing"].append("no dataset version recorded")
        imported = ((run or {}).get("result") or {}).get("provenance")
        if imported:
            out["imported_provenance"] = imported
        return out


def lineage_tree(lin: dict) -> dict:
    """The lineage as a nested ``{"label": str, "children": [...]}`` tree (for text and images)."""

    def node(label, *children):
        return {"label": label, "children": [c for c in children if c]}

    def run_node(title, run, *extra):
        if not run or run.get("id") is None:
            return node(f"{title}: (no run recorded)", *extra)
        code = run.get("code") or {}
        commit = (code.get("git_commit") or "")[:10]
        dirty = " dirty" if code.get("git_dirty") else ""
        label = (f"{title}: run #{run['id']} {run['kind']} ({run['status']}) by "
                 f"{run.get('user') or '?'} at {str(run.get('started_at'))[:19]}; code "
                 f"{code.get('version') or '?'}{' @' + commit if commit else ''}{dirty}")
        files = [node(f"file {f['name']} sha256 {str(f['sha256'])[:12]}")
                 for f in run.get("files", [])[:20]]
        if len(run.get("files", [])) > 20:
            files.append(node(f"... {len(run['files']) - 20} more files"))
        return node(label, *extra, *files)

    m = lin["model"]
    kids = [run_node("training", lin.get("training_run"))]
    if lin.get("level"):
        lv = lin["level"]
        kids.append(node(f"level {lv['name']} (program {lv.get('program') or '?'})"))
    if lin.get("parent"):
        kids.append(node(f"parent {lin['parent']['ref']} ({lin['parent']['status']})"))
    dv = lin.get("dataset_version")
    if dv and dv.get("in_registry") is False:
        kids.append(node(f"dataset version {dv['ref']} hash {str(dv['hash'])[:12]} "
                         "(not in this registry)"))
    elif dv:
        lab = dv["labels"]
        label_runs = []
        for r in dv["label_runs"]:
            lvs = ", ".join(
                f"{lv.get('name', '?')} [{lv.get('program') or '?'} "
                f"{lv.get('program_version') or ''}".rstrip() + f"] {lv['n_labels']} labels"
                for lv in r["levels"])
            label_runs.append(run_node(f"labels {lvs}", r))
        ingest = [run_node(f"structures ({r['n_structures']})", r) for r in dv["ingest_runs"]]
        kids.append(node(
            f"dataset version {dv['ref']} hash {dv['hash'][:12]}; filter "
            f"{dv['filter'] or '(none)'}; {lab['total']} pinned labels "
            f"({dv['retracted_labels']} retracted); splits {dv['splits']}",
            run_node("created by", dv.get("creation_run")),
            node("label runs", *label_runs), node("ingest runs", *ingest)))
    for what in lin.get("missing", []):
        kids.append(node(f"missing: {what}"))
    return node(f"model {lin['ref']} [{m['architecture']}] {m['status']} "
                f"content {m['content_hash'][:12]}", *kids)
