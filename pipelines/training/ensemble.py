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

ARCHS = ("ani", "hipnn")
DEVICES = ("auto", "cpu", "cuda")
CONFIG_FORMAT = 1
MAX_MEMBERS = 64
_TOPIC = "nnp-train-"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is
    refused."""
    if device not in DEVICES:
        raise BadInput(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise BadInput("--device cuda: torch sees no CUDA GPU on this machine "
                       f"(torch {torch.__version__}); use --device cpu or auto")
    return "cpu"


def check_arch(arch: str) -> str:
    if arch == "hipnn":
        raise BadInput("--arch hipnn is not yet available (HIP-NN training is planned; "
                       "use --arch ani)")
    if arch not in ARCHS:
        raise BadInput(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    return arch


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
            seed: int = 0, **overrides) -> dict:
    """Check the request and build the stored config; writes nothing.

    ``overrides`` are training settings given as arguments (None: from the config file or
    the defaults): epochs, patience, batch_size, energy_weight, forces_weight.
    """
    import torchani

    from registry.chem.elements import SYMBOLS, symbol_to_z
    from registry.store.refs import check_int, check_name

    from .ani import check_config, read_config
    from .data import fit_element_shifts, training_data
    from .loop import forces_weight

    check_arch(arch)
    check_int(ensemble, "--ensemble", 1, MAX_MEMBERS)
    check_int(seed, "--seed", 0, 2**31 - 1 - MAX_MEMBERS)
    dev = resolve_device(device)
    user = read_config(config)
    cfg = check_config({**user, **{k: v for k, v in overrides.items() if v is not None}})
    info = reg.resolve_dataset(dataset_ref)
    name = check_name(name or f"{info['name']}-{arch}", "model name")
    mat = reg.materialize(info["ref"])
    data = training_data(mat)
    if data.count("train") == 0:
        raise BadInput(f"dataset {info['ref']} has no structures in its training split")
    if data.n_with_energy("train") == 0:
        raise BadInput(f"dataset {info['ref']} has no energies in its training split; "
                       f"an energy-trained potential needs them")
    if cfg["forces_weight"] and data.n_with_forces("train") == 0:
        raise BadInput(f"--forces-weight {cfg['forces_weight']}: dataset {info['ref']} has "
                       f"no forces in its training split (use --forces-weight 0)")
    present = [SYMBOLS[z] for z in data.elements]
    elements = cfg["elements"] or present
    lacking = [s for s in present if s not in elements]
    if lacking:
        raise BadInput(f"config elements {elements} lack {', '.join(lacking)}, present in "
                       f"dataset {info['ref']}")
    zs = sorted(symbol_to_z(s) for s in elements)
    shifts = fit_element_shifts(data, [z for z in zs if z in data.elements])
    stored = {**cfg, "format": CONFIG_FORMAT, "arch": arch,
              "torchani_version": torchani.__version__,
              "elements": [SYMBOLS[z] for z in zs],
              "self_energies_ev": {SYMBOLS[z]: shifts.get(z, 0.0) for z in zs},
              "reference_energies_ev": reference_energies(reg, data,
                                                          [SYMBOLS[z] for z in zs]),
              "forces_weight": forces_weight(cfg, data), "ensemble": ensemble, "seed": seed,
              "levels": data.levels, "target": data.target,
              "delta": bool((info["params"] or {}).get("delta")),
              "dataset": info["ref"], "dataset_hash": info["hash"]}
    return {"config": stored, "user_config": user, "name": name, "device": dev,
            "dataset": info, "data": data}


def train_member_task(url: str, dataset_ref: str, dataset_hash: str, config: dict,
                      member: int, device: str, topic: str | None = None) -> dict:
    """One Dask task: open the registry at ``url``, materialize, train member ``member``
    with seed ``config["seed"] + member``; returns safetensors bytes and the results."""
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    from registry.core import Registry

    from .data import training_data
    from .loop import train_member
    from .torch_io import state_dict_to_safetensors

    worker = _worker()
    if device == "cuda":
        import torch

        device = f"cuda:{member % max(torch.cuda.device_count(), 1)}"
    with Registry(url) as reg:
        mat = reg.materialize(dataset_ref)
    if mat.hash != dataset_hash:
        raise RuntimeError(f"{dataset_ref} read with hash {mat.hash}, expected {dataset_hash}")
    data = training_data(mat)
    seed = int(config["seed"]) + member

    def on_epoch(row):
        if worker is not None and topic:
            worker.log_event(topic, {"member": member, **row})

    out = train_member(data, config, seed, device, on_epoch=on_epoch)
    # no safetensors metadata: its keys are written in hash-map order, which would make
    # equal weights differ in bytes (and in artifact hash)
    out["weights"] = state_dict_to_safetensors(out.pop("state_dict"))
    out.update(member=member, seed=seed, device=device, cache=mat.cache_status,
               worker=getattr(worker, "address", None))
    return out


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
          device: str = "auto", config=None, *, client=None, on_event=None,
          description: str | None = None) -> dict:
    """Train an ensemble on Dask and register it (see the module docstring).

    ``reg_url``: the registry's database URL, or an open :class:`registry.Registry` (used
    as is; the tasks connect to its URL). ``config``: a dict or a .json/.yaml file of
    :mod:`.ani` settings; explicit arguments override it. ``client``: a
    ``distributed.Client`` (default: :func:`pipelines.cluster.dask_client`, i.e.
    ``NNP_DASK_SCHEDULER`` or a local cluster). ``on_event(dict)`` receives progress:
    ``{"event": "start"|"epoch"|"member"|"registered", ...}``.

    Returns ``{"model": "NAME:V", "run_id", "metrics": {split: ...}, "members": [...],
    "version": <the registered version>, "seconds"}``.
    """
    from contextlib import nullcontext

    from registry.core import Registry

    emit = on_event or (lambda e: None)
    t0 = time.perf_counter()
    own = isinstance(reg_url, str)
    with (Registry(reg_url) if own else nullcontext(reg_url)) as reg:
        plan = prepare(reg, dataset_ref, arch=arch, ensemble=ensemble, device=device,
                       config=config, name=name, seed=seed, epochs=epochs,
                       patience=patience, batch_size=batch_size,
                       energy_weight=energy_weight, forces_weight=forces_weight)
        cfg, info, data = plan["config"], plan["dataset"], plan["data"]
        params = {"dataset": info["ref"], "arch": arch, "ensemble": ensemble,
                  "seed": seed, "name": plan["name"], "device": plan["device"],
                  "epochs": cfg["epochs"], "patience": cfg["patience"],
                  "batch_size": cfg["batch_size"], "energy_weight": cfg["energy_weight"],
                  "forces_weight": cfg["forces_weight"], "config": plan["user_config"]}
        with reg.run("train", params) as run:
            run.consumed("dataset_version", info["id"], ref=info["ref"], sha256=info["hash"])
            emit({"event": "start", "run_id": run.id, "name": plan["name"],
                  "dataset": info["ref"], "ensemble": ensemble, "epochs": cfg["epochs"],
                  "device": plan["device"], "n_train": data.count("train"),
                  "n_val": data.count("val"), "n_test": data.count("test")})
            results = _run_members(reg.url, info, cfg, ensemble, plan["device"], client, emit)
            out = _register(reg, plan, results, run, description)
            run.result = {"model": out["model"], "metrics": out["metrics"]}
            out["run_id"] = run.id
    out["seconds"] = time.perf_counter() - t0
    emit({"event": "registered", "model": out["model"], "run_id": out["run_id"]})
    return out


def _run_members(url, info, cfg, ensemble, device, client, emit) -> list[dict]:
    """Submit one task per member and gather them in member order, relaying progress."""
    from contextlib import nullcontext

    from .. import cluster

    topic = _TOPIC + uuid.uuid4().hex
    events: queue.Queue = queue.Queue()
    n = min(ensemble, os.cpu_count() or 1, 4)
    ctx = nullcontext(client) if client is not None else cluster.dask_client(n_workers=n)
    with ctx as c:
        c.subscribe_topic(topic, lambda ev: events.put(ev[1] if isinstance(ev, tuple)
                                                       else ev))
        futures = [c.submit(train_member_task, url, info["ref"], info["hash"], cfg, k,
                            device, topic, pure=False, key=f"train-member-{k}-{topic}")
                   for k in range(ensemble)]
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
    from .loop import residual_metrics
    from .plots import learning_curve_png, parity_png

    cfg, data, info = plan["config"], plan["data"], plan["dataset"]
    pred = ensemble_predictions(results)
    metrics = residual_metrics(data, pred)
    members = [{"member": r["member"], "seed": r["seed"], "metrics": r["metrics"],
                "best_epoch": r["best_epoch"], "epochs": r["epochs"],
                "seconds": round(r["seconds"], 3),
                "seconds_per_epoch": round(r["seconds_per_epoch"], 4),
                "worker": r["worker"], "device": r["device"]} for r in results]
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
    version = reg.register_model(
        plan["name"], [r["weights"] for r in results], architecture=cfg["arch"],
        config=cfg, elements=cfg["elements"], cutoff=cfg["radial_cutoff"],
        units={"energy": "eV", "length": "Å"}, level=data.levels[0],
        dataset_version=info["ref"], metrics=stored_metrics, extras=extras, run=run,
        description=description or f"torchani ANI ensemble of {len(results)}")
    return {"model": version["ref"], "metrics": metrics, "members": members,
            "version": version}


def _json_bytes(obj) -> bytes:
    import json

    return json.dumps(obj, indent=1).encode()
