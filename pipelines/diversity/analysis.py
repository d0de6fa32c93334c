"""t-SNE diversity maps of atomic environments, and diversity numbers (``nnp diversity``).

:func:`diversity` analyses dataset versions element by element:

1. checks the request (:mod:`.inputs`) and reads the versions' atoms (:mod:`.environments`);
2. per element, looks for a stored map of the same inputs (reused as is), else for a stored
   map of the same features, element, perplexity and seed over some of the versions (new
   environments are then placed into it with openTSNE's ``transform``), else plans a full fit;
   a fit samples at most ``sample`` environments by stratum (:mod:`.sampling`);
3. computes the features the plan needs in one pass of Dask tasks (:mod:`.features`);
4. fits or extends the maps (:mod:`.embedding`), stores each as an artifact
   (:mod:`.store`), computes the numbers in feature space (:mod:`.breakdown`), draws one PNG
   panel per element (:mod:`.plots`);

all inside one ``diversity`` run that consumes the versions (and model, maps) and produces the
maps, the PNG and the numbers of every version. :func:`diversity_numbers` gives the numbers
of one version without a map (``nnp al status`` and ``nnp dataset show`` read them).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from registry.chem.elements import SYMBOLS
from registry.store.runs import find_outputs

from . import store
from .breakdown import element_numbers, version_view
from .environments import (
    SPLIT_NAMES,
    Environments,
    atom_keys,
    first_iteration,
    read_environments,
)
from .inputs import DEFAULT_PERPLEXITY, DEFAULT_SAMPLE, Request, check_request
from .sampling import strata, stratified_sample


@dataclass
class Plan:
    """One element's map: reused, extended (``base`` + new rows) or fitted."""

    z: int
    family: str
    key: str
    mode: str  # "reused" | "extended" | "fit"
    rows: np.ndarray  # rows of the environments on the map, in map order
    new: np.ndarray  # rows whose features must be computed (fit: all; extended: the new)
    stored: store.StoredMap | None = None  # reused map, or the base of an extension

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.z]


def env_rows(env: Environments, sid: np.ndarray, atom: np.ndarray) -> np.ndarray:
    """Rows of ``env`` holding atoms (``sid``, ``atom``); -1 where absent."""
    have, want = atom_keys(env.structure_id, env.atom), atom_keys(sid, atom)
    pos = np.minimum(np.searchsorted(have, want), max(len(have) - 1, 0))
    found = have[pos] == want if len(have) else np.zeros(len(want), bool)
    return np.where(found, pos, -1)


def sample_rows(env: Environments, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``rows``, stratified by version, iteration and split."""
    labels = strata(env.first[rows], first_iteration(env)[rows], env.split[rows])
    return rows[stratified_sample(labels, n, np.random.default_rng(seed))]


def plan_element(reg, req: Request, env: Environments, z: int, refit: bool) -> Plan:
    family = store.family_key(req.spec.key, SYMBOLS[z], req.perplexity, req.seed)
    key = store.map_key(family, env.hashes, req.sample)
    rows = np.flatnonzero(env.z == z)
    if not refit:
        m = store.find_map(reg, key)
        if m is not None:
            at = env_rows(env, m.structure_id, m.atom)
            if (at >= 0).all():
                return Plan(z, family, key, "reused", at, at[:0], m)
        base = store.find_base(reg, family, env.version_ids, req.sample)
        if base is not None:
            at = env_rows(env, base.structure_id, base.atom)
            if (at >= 0).all():
                fresh = np.setdiff1d(rows, at)
                rate = len(base) / max(int(base.meta["n_environments"]), 1)
                n_new = min(len(fresh), int(round(rate * len(fresh))) or (1 if len(fresh)
                                                                          else 0))
                new = sample_rows(env, fresh, n_new, req.seed)
                return Plan(z, family, key, "extended", np.concatenate([at, new]), new, base)
    picked = sample_rows(env, rows, req.sample, req.seed)
    return Plan(z, family, key, "fit", picked, picked)


def _emit(on_event, **ev) -> None:
    if on_event is not None:
        on_event(ev)


def _features(reg, env, rows, spec, client, on_event, what) -> dict[int, np.ndarray]:
    from .features import compute_features

    if not len(rows):
        return {}
    return compute_features(reg.url, env, rows, spec, client, on_progress=lambda d, t: _emit(
        on_event, event="features", what=what, done=d, total=t))


def _by_row(rows: np.ndarray, env: Environments, feats: dict) -> dict[int, np.ndarray]:
    """{row: feature vector} lookup arrays per element: ``(sorted rows, features)``."""
    out = {}
    for z, f in feats.items():
        rz = rows[env.z[rows] == z]
        order = np.argsort(rz, kind="stable")
        out[z] = (rz[order], f[order])
    return out


def _take(table, rows: np.ndarray) -> np.ndarray:
    have, f = table
    return f[np.searchsorted(have, rows)]


def _map_of(plan: Plan, req: Request, env: Environments, coords, feats, transformed,
            base_sha) -> store.StoredMap:
    rows = plan.rows
    return store.StoredMap(
        meta={"element": plan.symbol, "refs": env.refs, "version_ids": env.version_ids,
              "hashes": env.hashes, "features": req.spec.key, "feature_label": req.spec.label,
              "perplexity": req.perplexity, "seed": req.seed, "sample": req.sample,
              "n_environments": int((env.z == plan.z).sum()), "key": plan.key,
              "family": plan.family, "base": base_sha},
        coords=coords, features=feats, structure_id=env.structure_id[rows],
        atom=env.atom[rows], member=env.member[rows], iteration=env.iteration[rows],
        split=env.split[rows], energy=env.energy[rows], transformed=transformed)


def _build_map(reg, run, p: Plan, req: Request, env: Environments, feats: dict, n_jobs: int,
               on_event) -> store.StoredMap:
    """The plan's map: the stored one (reused), or fitted / extended and stored."""
    from .embedding import extend_map, fit_map

    if p.mode == "reused":
        run.consumed(store.MAP, ref=p.key, sha256=p.stored.sha256)
        return p.stored
    new_f = _take(feats[p.z], p.new) if len(p.new) else None
    if p.mode == "fit":
        _emit(on_event, event="embed", element=p.symbol, n=len(p.rows))
        progress = None if on_event is None else (lambda d, t: _emit(
            on_event, event="embed", element=p.symbol, done=d, total=t))
        coords = fit_map(new_f, req.perplexity, req.seed, n_jobs=n_jobs, on_iteration=progress)
        all_f, moved, base_sha = new_f, np.zeros(len(p.rows), bool), None
    else:
        base = p.stored
        run.consumed(store.MAP, ref=base.meta["key"], sha256=base.sha256)
        coords, all_f = base.coords, base.features
        if new_f is not None:
            _emit(on_event, event="embed", element=p.symbol, n=len(p.new), transform=True)
            old, placed = extend_map(base.coords, base.features, new_f, req.seed,
                                     n_jobs=n_jobs)
            coords, all_f = np.concatenate([old, placed]), np.concatenate([all_f, new_f])
        moved = np.concatenate([base.transformed, np.ones(len(p.new), bool)])
        base_sha = base.sha256
    m = _map_of(p, req, env, coords, all_f, moved, base_sha)
    run.outputs.append(store.save_map(reg, m))
    return m


def colour_values(reg, env: Environments, rows: np.ndarray, color_by: str):
    """(values, order, continuous) for the points ``rows``."""
    if color_by == "dataset":
        return np.asarray(env.refs)[env.first[rows]], list(env.refs), False
    if color_by == "iteration":
        it = first_iteration(env)[rows]
        return np.asarray([f"iteration {i}" for i in it]), \
            [f"iteration {i}" for i in np.unique(it)], False
    if color_by == "split":
        return np.asarray(SPLIT_NAMES)[env.split[rows]], list(SPLIT_NAMES), False
    if color_by == "energy":
        return env.energy[rows], None, True
    from registry.query import Q

    source = {}
    for ref in env.refs:
        for r in reg.query(Q._nnp_dataset == ref):
            source.setdefault(r["id"], r["source"] or "(no source)")
    values = np.asarray([source.get(int(s), "(no source)") for s in env.structure_id[rows]])
    kinds, counts = np.unique(values, return_counts=True)
    return values, [k for _, k in sorted(zip(-counts, kinds, strict=True))], False


def diversity(reg, refs, *, elements=None, features: str = "aev",
              sample: int = DEFAULT_SAMPLE, color_by: str = "dataset",
              perplexity: float = DEFAULT_PERPLEXITY, seed: int = 0,
              reference: str | None = None, output="diversity.png", refit: bool = False,
              client=None, on_event=None, n_jobs: int = 1) -> dict:
    """Maps and numbers of ``refs`` (see the module docstring); returns the ``--json`` dict.

    ``client``: a ``distributed.Client`` (default: :func:`pipelines.cluster.dask_client`,
    started only when features must be computed). ``on_event(dict)`` receives progress:
    ``{"event": "plan"|"features"|"embed"|"numbers", ...}``. ``n_jobs``: openTSNE threads.
    """
    from .embedding import check_perplexity
    from .plots import Panel, map_png

    req = check_request(reg, refs, elements=elements, features=features, sample=sample,
                        seed=seed, perplexity=perplexity, color_by=color_by,
                        reference=reference, output=output)
    env = read_environments(reg, req.infos)
    for z in req.elements:
        check_perplexity(req.perplexity, min(int((env.z == z).sum()), req.sample),
                         f"element {SYMBOLS[z]}")
    ref_env = read_environments(reg, [req.reference]) if req.reference else None
    plans = [plan_element(reg, req, env, z, refit) for z in req.elements]
    _emit(on_event, event="plan", maps={p.symbol: p.mode for p in plans})
    ref_rows = np.zeros(0, np.int64)
    if ref_env is not None:
        ref_rows = np.concatenate([sample_rows(ref_env, np.flatnonzero(ref_env.z == z),
                                               req.sample, req.seed) for z in req.elements])
    need = np.concatenate([p.new for p in plans]) if plans else np.zeros(0, np.int64)
    params = {"refs": req.refs, "elements": req.symbols, "features": req.spec.label,
              "sample": req.sample, "perplexity": req.perplexity, "seed": req.seed,
              "color_by": req.color_by, "reference": req.reference and req.reference["ref"],
              "output": str(req.output), "refit": bool(refit)}
    computing = len(need) or len(ref_rows)
    with _cluster(client if computing else None, computing) as c, \
            reg.run(store.RUN_KIND, params) as run:
        _consume(run, req)
        feats = _by_row(need, env, _features(reg, env, need, req.spec, c, on_event, "maps"))
        ref_feats = _features(reg, ref_env, ref_rows, req.spec, c, on_event, "reference") \
            if ref_env is not None else {}
        panels, result = [], {}
        for p in plans:
            m = _build_map(reg, run, p, req, env, feats, n_jobs, on_event)
            _emit(on_event, event="numbers", element=p.symbol)
            reference_f = None if ref_env is None else ref_feats.get(
                p.z, np.zeros((0, m.features.shape[1]), np.float32))  # may lack the element
            nums = element_numbers(env, p.z, p.rows, m.features, reference_f, req.seed)
            nums["map"] = {"artifact": f"sha256:{m.sha256}", "sha256": m.sha256,
                           "uri": m.uri, "key": p.key, "mode": p.mode,
                           "n_points": len(m), "n_transformed": int(m.transformed.sum())}
            result[p.symbol] = nums
            values, order, continuous = colour_values(reg, env, p.rows, req.color_by)
            title = f"{p.symbol}: {len(m):,} of {nums['n_environments']:,} environments"
            if m.transformed.any():
                title += f" ({int(m.transformed.sum()):,} by transform)"
            panels.append((Panel(title, m.coords, values), order, continuous))
        png = _draw(panels, req, map_png)
        _write(req.output, png)
        sha, size, uri = reg.artifacts.put(png)
        run.produced(store.PNG, ref=str(req.output), sha256=sha, uri=uri, size=size)
        reference_name = req.reference["ref"] if req.reference else "+".join(req.refs)
        for info in req.infos:
            run.outputs.append(store.numbers_edge(info["id"], info["ref"], {
                "features": req.spec.label, "reference": reference_name,
                "analysed": req.refs, "elements": {s: version_view(n, info["ref"])
                                                  for s, n in result.items()}}))
        for nums in result.values():
            nums["png"] = str(req.output)
        run.result = {"png": str(req.output), "elements": {
            s: {k: n[k] for k in ("n_environments", "coverage", "mean_nn_distance",
                                  "effective_environments", "radius")}
            for s, n in result.items()}}
        run_id = run.id
    return {"refs": req.refs, "features": req.spec.label, "color_by": req.color_by,
            "perplexity": req.perplexity, "seed": req.seed, "sample": req.sample,
            "reference": reference_name, "png": str(req.output), "run_id": run_id,
            "elements": result}


def _draw(panels, req: Request, map_png) -> bytes:
    order = panels[0][1] if panels else None
    continuous = bool(panels and panels[0][2])
    if req.color_by == "iteration":  # every panel's iterations, in order
        order = sorted({o for _, ords, _ in panels for o in ords},
                       key=lambda s: int(s.split()[-1]))
    elif req.color_by == "source":
        order = list(dict.fromkeys(o for _, ords, _ in panels for o in ords))
    title = (f"t-SNE of {req.spec.label} features (perplexity {req.perplexity:g}), "
             f"coloured by {req.color_by}: {', '.join(req.refs)}")
    return map_png([p for p, _, _ in panels], req.color_by, title, continuous=continuous,
                   unit="(eV/atom)" if req.color_by == "energy" else "", order=order)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cluster(client, needed):
    """The client given, a new local cluster when features are needed, else nothing."""
    if client is not None or not needed:
        return nullcontext(client)
    from ..cluster import dask_client

    return dask_client()


def _consume(run, req: Request) -> None:
    for info in req.infos:
        run.consumed("dataset_version", info["id"], info["ref"], hash=info["hash"])
    if req.reference:
        run.consumed("dataset_version", req.reference["id"], req.reference["ref"],
                     hash=req.reference["hash"], role="reference")
    if req.spec.kind == "model":
        run.consumed("model_version", ref=req.spec.key["model"],
                     content_hash=req.spec.key["content_hash"])


def diversity_numbers(reg, dataset_ref: str, *, elements=None, features: str = "aev",
                      sample: int = DEFAULT_SAMPLE, seed: int = 0,
                      reference: str | None = None, client=None, on_event=None) -> dict:
    """Diversity numbers of one dataset version, per element, with its AL iterations
    (no map): ``{"dataset", "features", "reference", "run_id", "reused", "elements":
    {symbol: numbers}}``. Stored as a ``diversity`` run; the same inputs asked again return
    the stored numbers."""
    req = check_request(reg, [dataset_ref], elements=elements, features=features,
                        sample=sample, seed=seed, reference=reference)
    info = req.infos[0]
    reference_name = req.reference["ref"] if req.reference else info["ref"]
    key = store.digest({"features": req.spec.key, "version": info["hash"],
                        "elements": req.symbols, "sample": req.sample, "seed": req.seed,
                        "reference": req.reference and req.reference["hash"]})
    for e in find_outputs(reg, store.NUMBERS, entity_id=info["id"], run_kind=store.RUN_KIND):
        meta = e.get("meta") or {}
        if meta.get("key") == key and meta.get("full"):
            return {"dataset": info["ref"], "features": req.spec.label,
                    "reference": reference_name, "run_id": e["run_id"], "reused": True,
                    "elements": meta["full"]}
    env = read_environments(reg, req.infos)
    ref_env = read_environments(reg, [req.reference]) if req.reference else None
    rows = {z: sample_rows(env, np.flatnonzero(env.z == z), req.sample, req.seed)
            for z in req.elements}
    need = np.concatenate(list(rows.values()))
    ref_rows = np.concatenate([sample_rows(ref_env, np.flatnonzero(ref_env.z == z),
                                           req.sample, req.seed)
                               for z in req.elements]) if ref_env is not None else None
    params = {"dataset": info["ref"], "elements": req.symbols, "features": req.spec.label,
              "sample": req.sample, "seed": req.seed, "reference": reference_name,
              "numbers_only": True}
    ctx = nullcontext(client) if client is not None else _cluster(None, True)
    with ctx as c, reg.run(store.RUN_KIND, params) as run:
        _consume(run, req)
        feats = _by_row(need, env, _features(reg, env, need, req.spec, c, on_event, "numbers"))
        ref_feats = _features(reg, ref_env, ref_rows, req.spec, c, on_event, "reference") \
            if ref_env is not None else {}
        out = {}
        for z, r in rows.items():
            f = _take(feats[z], r)
            reference_f = None if ref_env is None else ref_feats.get(
                z, np.zeros((0, f.shape[1]), np.float32))
            out[SYMBOLS[z]] = element_numbers(env, z, r, f, reference_f, req.seed)
        run.outputs.append(store.numbers_edge(info["id"], info["ref"], {
            "features": req.spec.label, "reference": reference_name, "key": key,
            "analysed": [info["ref"]], "full": out,
            "elements": {s: version_view(n, info["ref"]) for s, n in out.items()}}))
        run.result = {"elements": {s: {k: n[k] for k in ("n_environments", "coverage",
                                                         "mean_nn_distance",
                                                         "effective_environments")}
                                   for s, n in out.items()}}
        run_id = run.id
    return {"dataset": info["ref"], "features": req.spec.label, "reference": reference_name,
            "run_id": run_id, "reused": False, "elements": out}
