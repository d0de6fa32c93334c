"""``nnp train``: an ensemble trained on Dask, registered as one model version.

:func:`train` checks everything it can before any work (architecture, device, config keys
and values, model name, that the dataset version exists and has energies in its training
split, forces when a forces weight is asked for); a refusal is a :class:`BadInput` and
nothing is written. Then, inside one ``train`` run in provenance (consuming the dataset
version, producing the model version), it submits one Dask task per member: member ``k`` is
seeded ``seed + k``, opens its own registry connection from the URL, materializes the version
(cached by its hash) and trains (:func:`.loop.train_member`). The driver gathers the members,
scores each and the ensemble mean on train/val/test, draws the parity plot and learning curve,
and registers ONE version holding every member (``latest`` moves to it). If anything fails,
the run is recorded ``failed`` (``interrupted`` on Ctrl-C) and no version exists.

Each member task stores checkpoints as artifacts and records them on the running run
(:func:`record_checkpoint`); :func:`resume` continues a failed or killed run from them in a new
run. ``parent``/``freeze`` start the members from a registered version (transfer learning,
:func:`transfer_plan`). A Δ dataset version records its base level in the config
(``base_level``), which the calculator and ``evaluate`` add back at inference.

The stored config holds everything the calculator needs to rebuild the members: the
architecture keys, ``elements``, ``self_energies_ev`` (the fitted per-element shift inside
each member) and ``reference_energies_ev`` (the level's atomic reference energies that were
subtracted from the targets and are added back at inference).
"""

from __future__ import annotations

import os
import queue
import time
import uuid

import numpy as np

from registry.errors import BadInput

from .device import resolve_device

CONFIG_FORMAT = 1
MAX_MEMBERS = 64
_TOPIC = "nnp-train-"


def reference_energies(reg, data, symbols: list[str]) -> dict[str, float]:
    """Per-element reference energies (eV) of the version's target for ``symbols``: the
    level's, or HIGH's minus LOW's for a Δ version; 0 where the level has none (as
    materialize counts them), checked against the version's ``energy_ref``."""
    from registry.chem.elements import SYMBOLS

    info = reg.resolve_dataset(data.ref)
    delta = (info["params"] or {}).get("delta")
    levels = [delta["high"], delta["low"]] if delta else data.levels[:1]
    out: dict[str, float] = {}
    for sign, level in zip((1.0, -1.0), levels, strict=False):
        for sym, e in reg.reference_energies(level)["energies"].items():
            out[sym] = out.get(sym, 0.0) + sign * float(e)
    refs = {s: out.get(s, 0.0) for s in symbols}
    present = [SYMBOLS[z] for z in data.elements]
    summed = data.composition_matrix(data.elements) @ np.array([refs[s] for s in present])
    if not np.allclose(summed, data.energy_ref, rtol=1e-9, atol=1e-6):
        raise RuntimeError("reference energies changed while the version was read; retry")
    return refs


def prepare(reg, dataset_ref: str, *, arch: str = "ani", ensemble: int = 4,
            device: str = "auto", config=None, name: str | None = None,
            seed: int = 0, parent: str | None = None, freeze=None, **overrides) -> dict:
    """Check the request and build the stored config; writes nothing.

    ``overrides`` are training settings given as arguments (None: from the config file or
    the defaults): epochs, patience, batch_size, energy_weight, forces_weight. ``parent``: a
    model REF to start every member from (transfer learning; see :func:`transfer_plan`),
    ``freeze``: name patterns of the parameters kept fixed (only with ``parent``).
    """
    from registry.chem.elements import SYMBOLS, symbol_to_z
    from registry.store.refs import check_int, check_name

    from . import archs
    from .ani import read_config
    from .data import fit_element_shifts, training_data
    from .loop import forces_weight

    check_config = archs.module(archs.check_arch(arch)).check_config
    check_int(ensemble, "--ensemble", 1, MAX_MEMBERS)
    check_int(seed, "--seed", 0, 2**31 - 1 - MAX_MEMBERS)
    dev = resolve_device(device)
    user = read_config(config)
    if freeze and parent is None:
        raise BadInput("--freeze needs --from MODEL_REF (the weights to keep fixed)")
    pulled = None
    if parent is not None:
        pulled = reg.pull_model(parent)
        user = parent_config(pulled, user, arch)
    cfg = check_config({**user, **{k: v for k, v in overrides.items() if v is not None}})
    info = reg.resolve_dataset(dataset_ref)
    name = check_name(name or f"{info['name']}-{arch}", "model name")
    mat = reg.materialize(info["ref"])
    data = training_data(mat)
    if arch == "hipnn":
        from .hipnn import check_periodic

        check_periodic(g.pbc for g in data.groups if g.pbc is not None)
    if data.count("train") == 0:
        raise BadInput(f"dataset {info['ref']} has no structures in its training split")
    if data.n_with_energy("train") == 0:
        raise BadInput(f"dataset {info['ref']} has no energies in its training split; "
                       f"an energy-trained potential needs them")
    if cfg["forces_weight"] and data.n_with_forces("train") == 0:
        raise BadInput(f"--forces-weight {cfg['forces_weight']}: dataset {info['ref']} has "
                       f"no forces in its training split (use --forces-weight 0)")
    present = [SYMBOLS[z] for z in data.elements]
    if pulled is not None:
        outside = [s for s in present if s not in cfg["elements"]]
        if outside:
            raise BadInput(f"model {pulled.ref} handles {', '.join(cfg['elements'])}; "
                           f"dataset {info['ref']} has {', '.join(outside)}")
    elements = cfg["elements"] or present
    lacking = [s for s in present if s not in elements]
    if lacking:
        raise BadInput(f"config elements {elements} lack {', '.join(lacking)}, present in "
                       f"dataset {info['ref']}")
    zs = sorted(symbol_to_z(s) for s in elements)
    shifts = fit_element_shifts(data, [z for z in zs if z in data.elements])
    delta = (info["params"] or {}).get("delta")
    stored = {**cfg, "format": CONFIG_FORMAT, "arch": arch,
              f"{archs.LIBRARIES[arch]}_version": archs.module(arch).library_version(),
              "elements": [SYMBOLS[z] for z in zs],
              "self_energies_ev": {SYMBOLS[z]: shifts.get(z, 0.0) for z in zs},
              "reference_energies_ev": reference_energies(reg, data,
                                                          [SYMBOLS[z] for z in zs]),
              "forces_weight": forces_weight(cfg, data), "ensemble": ensemble, "seed": seed,
              "levels": data.levels, "target": data.target,
              "delta": bool(delta), "base_level": delta["low"] if delta else None,
              "dataset": info["ref"], "dataset_hash": info["hash"]}
    if "repulsion" in stored:  # ANI: the stored config says what "auto" became
        from .ani import uses_repulsion

        stored["repulsion"] = uses_repulsion(stored)
    transfer = None
    if pulled is not None:
        transfer = transfer_plan(pulled, stored, freeze or [])
        stored.update(parent=pulled.ref, frozen=transfer["frozen"],
                      freeze=list(freeze or []))
    return {"config": stored, "user_config": read_config(config), "name": name,
            "device": dev, "dataset": info, "data": data, "transfer": transfer}


def parent_config(pulled, user: dict, arch_name: str = "ani") -> dict:
    """The user's settings with the parent's architecture keys: a config file may set
    training keys, but an architecture key that differs from the parent's is refused, and
    so is a parent of another architecture than ``arch_name`` (no ANI <-> HIP-NN transfer)."""
    from . import archs

    cfg = pulled.config or {}
    have = pulled.info["architecture"]
    if have not in archs.ARCHS or cfg.get("arch") != have:
        raise BadInput(f"--from {pulled.ref}: architecture {have!r}; transfer starts from "
                       f"{' or '.join(repr(a) for a in archs.ARCHS)} models")
    if have != arch_name:
        raise BadInput(f"--from {pulled.ref} has architecture {have!r} and --arch is "
                       f"{arch_name!r}: transfer keeps the architecture, weights do not "
                       f"carry between {archs.TITLES[have]} and {archs.TITLES[arch_name]} "
                       f"(use --arch {have}, or train from scratch)")
    mod = archs.module(arch_name)
    keys, check_config = mod.MODEL_DEFAULTS, mod.check_config
    arch = {k: cfg[k] for k in keys if k in cfg}
    if set(arch) != set(keys):
        raise BadInput(f"--from {pulled.ref}: its stored config lacks "
                       f"{', '.join(sorted(set(keys) - set(arch)))}")
    mine = check_config({**user, **arch, **{k: v for k, v in user.items()
                                             if k in keys}})
    clash = [k for k in keys if k in user and mine[k] != arch[k]]
    if clash:
        raise BadInput(f"--config sets {', '.join(f'{k}={user[k]!r}' for k in clash)}, but "
                       f"--from {pulled.ref} fixes the architecture "
                       f"({', '.join(f'{k}={arch[k]!r}' for k in clash)}); drop "
                       f"{'it' if len(clash) == 1 else 'them'} from the config")
    return {**user, **arch}


def match_frozen(names: list[str], patterns) -> list[str]:
    """Parameter names matched by any pattern: a glob (``fnmatch``, the whole name), or a
    regular expression when written ``re:EXPR`` (``re.search``). Each pattern must match."""
    import fnmatch
    import re

    chosen = set()
    for pat in patterns:
        if not isinstance(pat, str) or not pat.strip():
            raise BadInput(f"--freeze {pat!r}: expected a glob or re:REGEX")
        if pat.startswith("re:"):
            try:
                rx = re.compile(pat[3:])
            except re.error as exc:
                raise BadInput(f"--freeze {pat!r}: not a regular expression ({exc})") from None
            hit = [n for n in names if rx.search(n)]
        else:
            hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hit:
            raise BadInput(f"--freeze {pat!r} matches no parameter; names look like "
                           f"{names[0]} (all {len(names)}: see docs/training.md)")
        chosen.update(hit)
    return [n for n in names if n in chosen]


def transfer_plan(pulled, stored: dict, freeze) -> dict:
    """Parent weights per member (member k from parent member k mod n) and the frozen
    parameter names; the parent's parameters must fit the member's shapes."""
    from .archs import new_member
    from .loop import load_parameters
    from .torch_io import safetensors_to_state_dict

    member = new_member(stored, 0)
    names = [n for n, _ in member.named_parameters()]
    frozen = match_frozen(names, freeze)
    if len(frozen) == len(names):
        raise BadInput(f"--freeze {' '.join(freeze)} freezes every parameter; "
                       f"nothing would train")
    blobs = [pulled.blobs[f] for f in pulled.weight_files()]
    try:
        load_parameters(member, safetensors_to_state_dict(blobs[0]))
    except ValueError as exc:
        raise BadInput(f"--from {pulled.ref}: its weights do not fit: {exc}") from None
    return {"parent": pulled.ref, "parent_id": pulled.info["id"],
            "parent_hash": pulled.info["content_hash"], "weights": blobs, "frozen": frozen}


def train_member_task(url: str, dataset_ref: str, dataset_hash: str, config: dict,
                      member: int, device: str, topic: str | None = None, *,
                      run_id: int | None = None, resume: dict | None = None,
                      init: bytes | None = None, frozen=()) -> dict:
    """One Dask task: open the registry at ``url``, materialize, train member ``member``
    with seed ``config["seed"] + member``; returns safetensors bytes and the results.

    With ``run_id``, each checkpoint goes to the artifact store and is recorded on that run
    at once (an output edge ``checkpoint``: ref ``member_K``, sha256, meta member, epoch,
    done, uri), so it outlives a killed driver. ``resume``: such an edge to continue from;
    ``init``: safetensors of the parent member (transfer); ``frozen``: parameter names."""
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    from registry.core import Registry

    from .data import training_data
    from .loop import read_checkpoint, train_member
    from .torch_io import safetensors_to_state_dict, state_dict_to_safetensors

    worker = _worker()
    if device == "cuda":
        import torch

        device = f"cuda:{member % max(torch.cuda.device_count(), 1)}"
    with Registry(url) as reg:
        mat = reg.materialize(dataset_ref)
        if mat.hash != dataset_hash:
            raise RuntimeError(f"{dataset_ref} read with hash {mat.hash}, "
                               f"expected {dataset_hash}")
        data = training_data(mat)
        seed = int(config["seed"]) + member
        start = None
        if resume is not None:
            start = read_checkpoint(reg.artifacts.get(resume["sha256"], resume.get("uri")))

        def on_epoch(row):
            if worker is not None and topic:
                worker.log_event(topic, {"member": member, **row})

        def on_checkpoint(epoch: int, blob: bytes, done: bool) -> None:
            if run_id is not None:
                record_checkpoint(reg, run_id, member, epoch, blob, done)

        out = train_member(data, config, seed, device, on_epoch=on_epoch,
                           init_state=None if init is None
                           else safetensors_to_state_dict(init),
                           frozen=frozen, resume=start, on_checkpoint=on_checkpoint)
    # no safetensors metadata: its keys are written in hash-map order, which would make
    # equal weights differ in bytes (and in artifact hash)
    out["weights"] = state_dict_to_safetensors(out.pop("state_dict"))
    out.update(member=member, seed=seed, device=device, cache=mat.cache_status,
               worker=getattr(worker, "address", None))
    return out


def record_checkpoint(reg, run_id: int, member: int, epoch: int, blob: bytes,
                      done: bool) -> dict:
    """Store a checkpoint and record it on the running run, in its own transaction."""
    from registry.store.runs import add_edges, edge

    sha, size, uri = reg.artifacts.put(blob)
    e = edge("checkpoint", ref=f"member_{member}", sha256=sha, member=member, epoch=epoch,
             done=done, uri=uri, size=size)
    with reg.session() as s:
        add_edges(s, run_id, outputs=[e])
    return e


def latest_checkpoints(run: dict) -> dict[int, dict]:
    """The newest checkpoint edge of each member of a run (its own, and those it resumed
    from), as ``{member: {"sha256", "uri", "epoch", "done"}}``."""
    best: dict[int, dict] = {}
    for e in run["inputs"] + run["outputs"]:
        if e["entity_type"] != "checkpoint" or not e.get("meta"):
            continue
        m = e["meta"]
        k = int(m["member"])
        cur = best.get(k)
        if cur is None or (m["epoch"], m["done"]) > (cur["epoch"], cur["done"]):
            best[k] = {"sha256": e["sha256"], "uri": m.get("uri"), "epoch": m["epoch"],
                       "done": m["done"], "member": k}
    return best


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def train(reg_url, dataset_ref: str, arch: str = "ani", ensemble: int = 4,
          epochs: int | None = None, patience: int | None = None,
          batch_size: int | None = None, energy_weight: float | None = None,
          forces_weight: float | None = None, seed: int = 0, name: str | None = None,
          device: str = "auto", config=None, *, parent: str | None = None, freeze=None,
          client=None, on_event=None, description: str | None = None,
          verify: bool = True) -> dict:
    """Train an ensemble on Dask and register it (see the module docstring).

    ``reg_url``: the registry's database URL, or an open :class:`registry.Registry` (used
    as is; the tasks connect to its URL). ``config``: a dict or a .json/.yaml file of
    settings of the architecture (:mod:`.ani` or :mod:`.hipnn`); explicit arguments override
    it. ``parent``/``freeze``: transfer learning (``--from``/``--freeze``). ``client``: a
    ``distributed.Client`` (default: :func:`pipelines.cluster.dask_client`, i.e.
    ``NNP_DASK_SCHEDULER`` or a local cluster).
    ``on_event(dict)`` receives progress:
    ``{"event": "start"|"epoch"|"member"|"registered", ...}``. ``verify``: run the
    verification checks (:mod:`.verify`) on the registered version and store them with it.

    Returns ``{"model": "NAME:V", "run_id", "metrics": {split: ...}, "members": [...],
    "version": <the registered version>, "verification", "seconds"}``.
    """
    from contextlib import nullcontext

    from registry.core import Registry

    t0 = time.perf_counter()
    own = isinstance(reg_url, str)
    with (Registry(reg_url) if own else nullcontext(reg_url)) as reg:
        plan = prepare(reg, dataset_ref, arch=arch, ensemble=ensemble, device=device,
                       config=config, name=name, seed=seed, epochs=epochs,
                       patience=patience, batch_size=batch_size,
                       energy_weight=energy_weight, forces_weight=forces_weight,
                       parent=parent, freeze=freeze)
        cfg = plan["config"]
        params = {"dataset": plan["dataset"]["ref"], "arch": arch, "ensemble": ensemble,
                  "seed": seed, "name": plan["name"], "device": plan["device"],
                  "epochs": cfg["epochs"], "patience": cfg["patience"],
                  "batch_size": cfg["batch_size"], "energy_weight": cfg["energy_weight"],
                  "forces_weight": cfg["forces_weight"], "config": plan["user_config"]}
        if plan["transfer"] is not None:
            params.update({"from": plan["transfer"]["parent"], "freeze": list(freeze or [])})
        out = _execute(reg, plan, params, client, on_event, description)
        if verify:
            out["verification"] = _verify(reg, out["model"], seed, plan["device"], on_event)
    out["seconds"] = time.perf_counter() - t0
    return out


def _verify(reg, ref: str, seed: int, device: str, on_event) -> dict:
    """The verification checks of a just-registered version; a version whose checks cannot
    run stays registered and unverified (``pull --strict`` then refuses it)."""
    from .verify import verify

    try:
        result = verify(reg, ref, seed=seed, device=device)
    except Exception as exc:
        result = {"passed": None, "error": f"{type(exc).__name__}: {exc}"}
    if on_event:
        on_event({"event": "verified", "model": ref, "passed": result.get("passed")})
    return result


def resume(reg_url, run_id: int, *, client=None, on_event=None,
           description: str | None = None) -> dict:
    """Continue the ``train`` run ``run_id`` (failed, interrupted or killed) from each
    member's newest checkpoint, with the run's own parameters, in a NEW ``train`` run whose
    params add ``resumed_from`` and which consumes the old run and the checkpoints it starts
    from; registers the version like :func:`train`. A member without a checkpoint starts
    over (from its seed, so the result is the same). A finished (ok) run is refused."""
    from contextlib import nullcontext

    from registry.core import Registry

    t0 = time.perf_counter()
    own = isinstance(reg_url, str)
    with (Registry(reg_url) if own else nullcontext(reg_url)) as reg:
        old = reg.get_run(run_id)
        if old["kind"] != "train":
            raise BadInput(f"run {run_id} is a {old['kind']!r} run; --resume continues "
                           f"'train' runs")
        if old["status"] == "ok":
            raise BadInput(f"run {run_id} already finished (ok); nothing to resume")
        if old["status"] == "running":
            raise BadInput(f"run {run_id} is still running (its process is alive or on "
                           f"another host); stop it before resuming")
        later = [r for r in reg.runs_consuming("run", run_id)
                 if r["kind"] == "train" and r["status"] in ("ok", "running")]
        if later:
            raise BadInput(f"run {run_id} was already resumed by run {later[-1]['id']} "
                           f"({later[-1]['status']}); resume that one if it did not finish")
        p = dict(old["params"] or {})
        p.pop("resumed_from", None)
        plan = prepare(reg, p["dataset"], arch=p["arch"], ensemble=p["ensemble"],
                       device=p["device"], config=p.get("config") or None, name=p["name"],
                       seed=p["seed"], epochs=p["epochs"], patience=p["patience"],
                       batch_size=p["batch_size"], energy_weight=p["energy_weight"],
                       forces_weight=p["forces_weight"], parent=p.get("from"),
                       freeze=p.get("freeze"))
        was = [e["sha256"] for e in old["inputs"] if e["entity_type"] == "dataset_version"]
        if was and was[0] != plan["dataset"]["hash"]:
            raise BadInput(f"run {run_id} trained on {p['dataset']} with hash {was[0][:12]}; "
                           f"it now has {plan['dataset']['hash'][:12]}")
        checkpoints = latest_checkpoints(old)
        out = _execute(reg, plan, {**p, "resumed_from": run_id}, client, on_event,
                       description, resumed_from=run_id, checkpoints=checkpoints)
    out["seconds"] = time.perf_counter() - t0
    out["resumed_from"] = run_id
    return out


def _execute(reg, plan, params, client, on_event, description, resumed_from=None,
             checkpoints=None) -> dict:
    """The ``train`` run: members on Dask, then registration (see the module docstring)."""
    from registry.store.runs import add_edges, edge

    emit = on_event or (lambda e: None)
    cfg, info, data = plan["config"], plan["dataset"], plan["data"]
    checkpoints = checkpoints or {}
    with reg.run("train", params) as run:
        run.consumed("dataset_version", info["id"], ref=info["ref"], sha256=info["hash"])
        if plan["transfer"] is not None:
            t = plan["transfer"]
            run.consumed("model_version", t["parent_id"], ref=t["parent"],
                         sha256=t["parent_hash"], role="parent")
        if resumed_from is not None:
            # written now, not at the end: resuming this run again needs them
            with reg.session() as s:
                add_edges(s, run.id, inputs=[edge("run", resumed_from, role="resumed_from")] + [
                    edge("checkpoint", ref=f"member_{k}", sha256=c["sha256"], member=k,
                         epoch=c["epoch"], done=c["done"], uri=c["uri"])
                    for k, c in sorted(checkpoints.items())])
        emit({"event": "start", "run_id": run.id, "name": plan["name"],
              "dataset": info["ref"], "ensemble": params["ensemble"],
              "epochs": cfg["epochs"], "device": plan["device"],
              "n_train": data.count("train"), "n_val": data.count("val"),
              "n_test": data.count("test"), "resumed_from": resumed_from,
              "resumed_at": {k: c["epoch"] for k, c in checkpoints.items()}})
        results = _run_members(reg.url, info, cfg, params["ensemble"], plan["device"],
                               client, emit, run_id=run.id, checkpoints=checkpoints,
                               transfer=plan["transfer"])
        out = _register(reg, plan, results, run, description)
        run.result = {"model": out["model"], "metrics": out["metrics"]}
        out["run_id"] = run.id
    emit({"event": "registered", "model": out["model"], "run_id": out["run_id"]})
    return out


def _run_members(url, info, cfg, ensemble, device, client, emit, *, run_id=None,
                 checkpoints=None, transfer=None) -> list[dict]:
    """Submit one task per member and gather them in member order, relaying progress."""
    from contextlib import nullcontext

    from .. import cluster

    topic = _TOPIC + uuid.uuid4().hex
    events: queue.Queue = queue.Queue()
    n = min(ensemble, os.cpu_count() or 1, 4)
    checkpoints = checkpoints or {}
    ctx = nullcontext(client) if client is not None else cluster.dask_client(n_workers=n)
    with ctx as c:
        c.subscribe_topic(topic, lambda ev: events.put(ev[1] if isinstance(ev, tuple)
                                                       else ev))
        futures = []
        for k in range(ensemble):
            init = frozen = None
            if transfer is not None:
                init = transfer["weights"][k % len(transfer["weights"])]
                frozen = transfer["frozen"]
            futures.append(c.submit(
                train_member_task, url, info["ref"], info["hash"], cfg, k, device, topic,
                run_id=run_id, resume=checkpoints.get(k), init=init, frozen=frozen or (),
                pure=False, key=f"train-member-{k}-{topic}"))
        try:
            pending = set(range(ensemble))
            while pending:
                _drain(events, emit)
                for k in sorted(pending):
                    if futures[k].done():
                        futures[k].result()  # raises the member's error here
                        pending.discard(k)
                        emit({"event": "member", "member": k,
                              "worker": futures[k].result()["worker"]})
                if pending:
                    time.sleep(0.1)
            results = [f.result() for f in futures]
            _drain(events, emit)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            try:
                c.unsubscribe_topic(topic)
            except Exception:  # noqa: BLE001 (a closing client may refuse; nothing to undo)
                pass
    return results


def _drain(events: queue.Queue, emit) -> None:
    while True:
        try:
            ev = events.get_nowait()
        except queue.Empty:
            return
        if isinstance(ev, dict):
            emit({"event": "epoch", **ev})


def ensemble_predictions(results: list[dict]) -> dict:
    """Mean of the members' residual energies (and forces when trained)."""
    e = np.mean([r["predictions"]["energy"] for r in results], axis=0)
    f = None
    if results[0]["predictions"]["forces"] is not None:
        f = np.mean([r["predictions"]["forces"] for r in results], axis=0)
    return {"energy": e, "forces": f}


def _register(reg, plan, results, run, description) -> dict:
    """Score, plot and register the version (one transaction, inside the run)."""
    from . import archs
    from .loop import residual_metrics
    from .plots import learning_curve_png, parity_png
    from .torchscript import RECORD as TORCHSCRIPT
    from .torchscript import export_record

    cfg, data, info = plan["config"], plan["data"], plan["dataset"]
    pred = ensemble_predictions(results)
    metrics = residual_metrics(data, pred)
    members = [{"member": r["member"], "seed": r["seed"], "metrics": r["metrics"],
                "best_epoch": r["best_epoch"], "epochs": r["epochs"],
                "seconds": round(r["seconds"], 3),
                "seconds_per_epoch": round(r["seconds_per_epoch"], 4),
                "worker": r["worker"], "device": r["device"],
                "resumed_at": r.get("resumed_at"), "aev_cache": r.get("aev_cache")}
               for r in results]
    e_true = data.column("energy")
    names = ("train", "val", "test")
    energy = {s: (e_true[data.split == k], pred["energy"][data.split == k])
              for k, s in enumerate(names) if (data.split == k).any()}
    forces = None
    if pred["forces"] is not None:
        from .metrics import atom_mask

        f_true, off = data.flat_forces(), data.atom_offsets()
        forces = {s: (f_true[atom_mask(off, data.split == k)],
                      pred["forces"][atom_mask(off, data.split == k)])
                  for k, s in enumerate(names) if (data.split == k).any()}
    title = f"{plan['name']} ({len(results)} members) on {info['ref']}"
    extras = {
        "parity.png": parity_png(energy, title, forces,
                                 energy_label="energy − Σ reference (eV)"),
        "learning_curve.png": learning_curve_png([r["curve"] for r in results], title),
        "learning_curve.json": _json_bytes([r["curve"] for r in results]),
    }
    stored_metrics = {**metrics, "members": [{k: m[k] for k in ("member", "seed", "best_epoch",
                                                                "epochs")} | m["metrics"]
                                             for m in members],
                      "forces_trained": pred["forces"] is not None}
    # the TorchScript export (docs/models.md), or the reason there is none
    exported, stored_metrics[TORCHSCRIPT] = export_record(cfg, [r["weights"] for r in results])
    extras.update(exported)
    version = reg.register_model(
        plan["name"], [r["weights"] for r in results], architecture=cfg["arch"],
        config=cfg, elements=cfg["elements"],
        cutoff=archs.module(cfg["arch"]).model_cutoff(cfg),
        units={"energy": "eV", "length": "Å"}, level=data.levels[0],
        dataset_version=info["ref"], metrics=stored_metrics, extras=extras, run=run,
        parent=cfg.get("parent"), frozen=cfg.get("frozen"),
        description=description or f"{archs.TITLES[cfg['arch']]} ensemble of {len(results)}")
    return {"model": version["ref"], "metrics": metrics, "members": members,
            "version": version}


def _json_bytes(obj) -> bytes:
    import json

    return json.dumps(obj, indent=1).encode()
