"""Science check (issue #16): multi-fidelity training with the registry's own commands.

Builds a small multi-fidelity set of small molecules and compares four recipes for a
CCSD(T)/cc-pVDZ potential trained on ~60 CCSD(T) energies:

1. **scratch**: ANI on CCSD(T) energies alone;
2. **Δ on GFN2**: ANI on CCSD(T) − GFN2-xTB (the base added back at inference);
3. **transfer**: pretrain on ωB97X/6-31G* energies + forces, fine-tune on CCSD(T) (`--from`,
   first layer frozen);
4. **Δ + transfer**: pretrain on ωB97X − GFN2, fine-tune on CCSD(T) − GFN2.

Data: GFN2-xTB Langevin MD (600 K) of H2O, NH3 and CH4 by default (G2 geometries), every
frame labelled at GFN2-xTB (energies + forces); the frames of some trajectories at
ωB97X/6-31G* (PySCF, energies + analytic forces), the frames of *other* trajectories at
CCSD(T)/cc-pVDZ (PySCF, energies), so no CCSD(T) geometry is seen in pretraining.
``--molecules`` takes other ``ase.build.molecule`` names (docs/training.md also measures
seven; larger molecules cost 2-6× more ωB97X time per frame).
Labels are computed on Dask (one task per trajectory) and cached as extxyz under ``--cache``
(default ``$NNP_CACHE/multifidelity``), keyed by every setting that changes them.

Everything after labeling uses the registry: levels with program and version, ``ingest`` runs
(one source per trajectory), dataset versions made with ``nnp dataset create`` (grouped by
source, ``--delta HIGH-LOW``), models with ``nnp train`` (``--from``/``--freeze``;
``--no-verify``: these are throw-away comparison models), run in this process against one
Dask cluster. The score is each version's test energy MAE as ``nnp train`` reports it (for a
Δ model on its Δ version that is the total-energy MAE: the base cancels); on the first seed
``nnp evaluate`` also scores every model on the plain CCSD(T) version's test split as totals
(a Δ model's GFN2 base added by its calculator), which must agree. Each seed is a new split
and a new training seed. Each recipe's starting point is scored too: its parent model (or the
GFN2 base, or nothing) with per-element shifts fitted to the CCSD(T) training split, so the
table shows what pretraining gives before fine-tuning and what fine-tuning adds.

    nice -n 10 python benchmarks/multifidelity.py --out mf-out [--seeds 4] [--quick]

Prints mean ± std of the test energy MAE (kcal/mol) per recipe, writes ``multifidelity.png``
and ``multifidelity.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

EV_KCAL = 23.060548  # kcal/mol per eV
LOW, DFT, CC = "gfn2-xtb", "pyscf:wb97x/6-31g*", "pyscf:ccsd(t)/cc-pvdz"
MOLECULES = ("H2O", "NH3", "CH4")
# info keys of the cached frames' energies (forces: forces_*), per role
KEYS = {"low": "energy_gfn2", "dft": "energy_dft", "cc": "energy_cc"}
RECIPES = ("scratch", "delta", "transfer", "delta+transfer")
PROTOTYPE = {"scratch": 3.3, "delta": 0.85, "transfer": 0.56, "delta+transfer": 0.35}
FREEZE = "*.layers.0.*"  # every element's first hidden layer (the AEV's projection)
# Every model starts from the fitted per-element shifts (`output_init: zero`): with 60 energies
# (and Δ targets of ~1 kcal/mol) random output layers add more error than the data train away
PRETRAIN = {"output_init": "zero"}
# Training keys of the CCSD(T) runs: the defaults' lr_patience of 5 decays the learning rate
# while 60-energy training is still far off (docs/training.md, "Science check: multi-fidelity")
FINETUNE = {"batch_size": 16, "lr_patience": 20, "output_init": "zero"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("multifidelity-out"))
    p.add_argument("--cache", type=Path, default=None,
                   help="label cache (default $NNP_CACHE/multifidelity or ./.nnp/cache/...)")
    p.add_argument("--db", default=None,
                   help="registry URL (default: a fresh SQLite file in --out)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--temperature", type=float, default=600.0)
    p.add_argument("--frames-per-trajectory", type=int, default=5)
    p.add_argument("--molecules", default=",".join(MOLECULES),
                   help="comma-separated ase.build.molecule names, each in both roles (the "
                        "order fixes the MD seeds, so an appended molecule keeps the cache)")
    p.add_argument("--dft-trajectories", type=int, default=14, help="per molecule")
    p.add_argument("--cc-trajectories", type=int, default=8, help="per molecule")
    p.add_argument("--interval", type=int, default=40, help="MD steps (0.5 fs) per frame")
    p.add_argument("--cc-split", default="0.5,0.1,0.4",
                   help="train,val,test of the CCSD(T) versions (0.5 of 120 = 60 labels)")
    p.add_argument("--cc-stratify", choices=("formula", "none"), default="formula",
                   help="split each molecule's CCSD(T) trajectories on its own, so that every "
                        "molecule has training labels on every seed (none: one grouped split "
                        "over all trajectories)")
    p.add_argument("--ensemble", type=int, default=2)
    p.add_argument("--pretrain-epochs", type=int, default=200)
    p.add_argument("--finetune-epochs", type=int, default=500)
    p.add_argument("--patience", type=int, default=100)
    p.add_argument("--finetune-config", type=Path, default=None,
                   help="nnp train --config FILE for the four CCSD(T) recipes alike (JSON or "
                        f"YAML training keys); default {FINETUNE}, written to --out")
    p.add_argument("--freeze", default=FREEZE,
                   help="nnp train --freeze pattern of the two transfer recipes ('' or none: "
                        "every parameter trains)")
    p.add_argument("--recipes", default=",".join(RECIPES),
                   help=f"comma-separated subset of {', '.join(RECIPES)}")
    p.add_argument("--report-only", action="store_true",
                   help="only redo the table, JSON and PNG from --out/rows.json (e.g. of a "
                        "run stopped early)")
    p.add_argument("--quick", action="store_true",
                   help="a minute-scale smoke run: few frames, few epochs, cheap levels")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- labels
def trajectory_task(formula: str, role: str, index: int, seed: int, high: str, settings: dict,
                    path: str) -> dict:
    """GFN2-xTB MD of ``formula``, every frame labelled at GFN2-xTB and ``high``; written to
    ``path`` (extxyz). A frame ``high`` fails on keeps its GFN2 label and the reason."""
    from ase.io import write

    from pipelines.labeling import LabelFailure, get_labeler
    from pipelines.simulation.md import md_sample

    t0 = time.perf_counter()
    frames = md_sample(formula, settings["frames"], settings["temperature"], seed, level=LOW,
                       interval=settings["interval"])
    labeler = get_labeler(high, threads=1)
    failures = []
    for f in frames:
        f.info[KEYS["low"]] = f.info.pop("energy")
        f.arrays[KEYS["low"].replace("energy", "forces")] = f.arrays.pop("forces")
        f.info.update(trajectory=f"{formula}/{role}/{index}")
        try:
            out = labeler.label(f)
        except LabelFailure as exc:
            f.info["label_failure"] = str(exc)
            failures.append(str(exc))
            continue
        f.info[KEYS[role]] = out["energy"]
        if out["forces"] is not None:
            f.arrays[KEYS[role].replace("energy", "forces")] = out["forces"]
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp, frames, format="extxyz")
    os.replace(tmp, path)  # a killed task leaves no half-written cache file
    return {"path": path, "failures": failures, "seconds": time.perf_counter() - t0}


def plan(args) -> tuple[dict, list[dict]]:
    """The settings that define the labels (the cache key) and one job per trajectory."""
    dft, cc = (("pyscf:hf/sto-3g", "pyscf:ccsd(t)/sto-3g") if args.quick else (DFT, CC))
    settings = {"temperature": args.temperature, "frames": args.frames_per_trajectory,
                "interval": args.interval, "low": LOW, "dft": dft, "cc": cc,
                "tblite": metadata.version("tblite"), "pyscf": metadata.version("pyscf"),
                # algorithm 2: GFN2-xTB forces are the calculator's (1 stored FixCom's
                # mass-weighted projection of them)
                "ase": metadata.version("ase"), "algorithm": 2}
    molecules = [m.strip() for m in args.molecules.split(",") if m.strip()]
    jobs = []
    for role, n, high in (("dft", args.dft_trajectories, dft),
                          ("cc", args.cc_trajectories, cc)):
        for m, formula in enumerate(molecules):
            for i in range(n):
                # distinct, reproducible MD seeds for every (role, molecule, trajectory)
                seed = (1 if role == "dft" else 2) * 100_000 + m * 1_000 + i
                jobs.append({"formula": formula, "role": role, "index": i, "seed": seed,
                             "high": high})
    return settings, jobs


def label_all(reg, client, args, cache: Path, console) -> dict:
    """Run (or reuse) every trajectory job; one ``label`` run in provenance."""
    from rich.progress import Progress

    settings, jobs = plan(args)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    for j in jobs:
        j["path"] = str(folder / f"{j['formula']}-{j['role']}-{j['index']:02d}.extxyz")
    todo = [j for j in jobs if not Path(j["path"]).exists()]
    t0 = time.perf_counter()
    with reg.run("label", {"settings": settings, "trajectories": len(jobs),
                           "cache": str(folder)}) as run:
        futures = [client.submit(trajectory_task, j["formula"], j["role"], j["index"],
                                 j["seed"], j["high"], settings, j["path"], pure=False)
                   for j in todo]
        failures = []
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"labeling {len(todo)} trajectories "
                                    f"({len(jobs) - len(todo)} cached)", total=len(todo))
            from dask.distributed import as_completed

            for fut in as_completed(futures):
                failures += fut.result()["failures"]
                progress.advance(bar)
        for j in jobs:
            run.produced("file", ref=j["path"], sha256=_sha256(j["path"]))
        run.result = {"computed": len(todo), "cached": len(jobs) - len(todo),
                      "label_failures": len(failures), "failure_examples": failures[:5],
                      "seconds": round(time.perf_counter() - t0, 1)}
    console.print(f"labels: {len(todo)} trajectories computed, {len(jobs) - len(todo)} from "
                  f"cache {folder} ({time.perf_counter() - t0:.0f} s, {len(failures)} "
                  f"label failures)")
    return {"settings": settings, "jobs": jobs, "failures": failures}


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ingest_all(reg, labels: dict, console) -> dict:
    """GFN2 labels per trajectory (its source), then each high level in one ingest."""
    from ase.io import read

    from pipelines.labeling import get_labeler

    settings = labels["settings"]
    names = {}
    for spec in (LOW, settings["dft"], settings["cc"]):
        names[spec] = get_labeler(spec).ensure_level(reg)["name"]
    by_role = {"dft": [], "cc": []}
    for j in labels["jobs"]:
        frames = read(j["path"], ":", format="extxyz")
        reg.ingest(frames, names[LOW], energy_key=KEYS["low"],
                   source=f"md/{j['formula']}/{j['role']}/{j['index']}")
        by_role[j["role"]] += frames
    counts = {}
    for role, spec in (("dft", settings["dft"]), ("cc", settings["cc"])):
        s = reg.ingest(by_role[role], names[spec], energy_key=KEYS[role], skip_missing=True)
        counts[names[spec]] = s.labels_new + s.labels_existing
    counts[names[LOW]] = sum(len(v) for v in by_role.values())
    console.print(f"ingested: {counts}")
    return {"levels": {"low": names[LOW], "dft": names[settings["dft"]],
                       "cc": names[settings["cc"]]}, "labels": counts}


# ----------------------------------------------------------------------------- commands
def nnp(*args) -> dict:
    """Run ``nnp ARGS --json`` (the registry's own command line, in this process: one torch
    import for all commands) and return its JSON; the NNP_* variables come from os.environ."""
    from pipelines.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*map(str, args), "--json"])
    if code != 0:
        raise RuntimeError(f"`nnp {' '.join(map(str, args))}` exited {code} (message above)")
    return json.loads(buf.getvalue())


def dataset(name, levels, *, split, seed, delta=None, note=None, stratify="none") -> str:
    args = ["dataset", "create", name, *sum((["--level", lv] for lv in levels), []),
            "--split", split, "--group-by", "source", "--stratify-by", stratify, "--seed", seed]
    if delta:
        args += ["--delta", delta]
    if note:
        args += ["--note", note]
    out = nnp(*args)
    return f"{name}:{out['version']}"


def train(dataset_ref, name, *, seed, epochs, args, parent=None, config=None) -> dict:
    cmd = ["train", "--dataset", dataset_ref, "--ensemble", args.ensemble, "--epochs", epochs,
           "--patience", args.patience, "--seed", seed, "--name", name, "--device", "cpu",
           "--no-verify"]
    if config:
        cmd += ["--config", config]
    if parent:
        cmd += ["--from", parent]
        if args.freeze and args.freeze != "none":
            cmd += ["--freeze", args.freeze]
    return nnp(*cmd)


def evaluate(model, dataset_ref, out_dir: Path) -> dict:
    png = out_dir / f"{model.replace(':', '_')}-test.png"
    out = nnp("evaluate", model, "--dataset", dataset_ref, "--split", "test", "-o", png)
    return out["metrics"]["test"]


def same_splits(reg, a: str, b: str) -> bool:
    """Whether dataset versions ``a`` and ``b`` put the same structures in each split."""
    def members(ref):
        m = reg.materialize(ref)
        return sorted((int(s), int(p)) for bk in m.buckets
                      for s, p in zip(bk["structure_id"], bk["split"], strict=True))
    return members(a) == members(b)


def composition_mean_mae(reg, ref: str) -> float:
    """Test MAE (eV) of predicting each structure's energy as the mean training energy of its
    composition: the floor any potential should beat."""
    m = reg.materialize(ref)
    comp, energy, split = [], [], []
    for bk in m.buckets:
        for z, e, sp in zip(bk["numbers"], bk["energy"], bk["split"], strict=True):
            comp.append(tuple(sorted(int(x) for x in z if x > 0)))
            energy.append(float(e))
            split.append(int(sp))
    energy, split = np.asarray(energy), np.asarray(split)
    means = {c: energy[[i for i, k in enumerate(comp) if k == c and split[i] == 0]].mean()
             for c in set(comp) if any(k == c and split[i] == 0 for i, k in enumerate(comp))}
    test = [i for i in range(len(comp)) if split[i] == 2 and comp[i] in means]
    return float(np.mean([abs(energy[i] - means[comp[i]]) for i in test]))


def starting_points(reg, plain: str, delta: str, parents: dict, recipes, cache: dict) -> dict:
    """Test MAE (eV) of each recipe before any CCSD(T) training: the parent model (transfer
    recipes), the GFN2-xTB base (Δ) or nothing (scratch), plus per-element shifts fitted by
    least squares to the CCSD(T) training split, as the fine-tuning starts from.
    ``cache`` keeps the parents' predictions by structure id across seeds."""
    from ase import Atoms

    from pipelines.training.calculator import NNPCalculator

    m = reg.materialize(plain)
    base = {int(s): float(le[1]) for bk in reg.materialize(delta).buckets
            for s, le in zip(bk["structure_id"], bk["level_energy"], strict=True)}
    rows = [(int(s), z[:n], x[:n], float(e), int(sp)) for bk in m.buckets
            for s, n, z, x, e, sp in zip(bk["structure_id"], bk["n_atoms"], bk["numbers"],
                                         bk["positions"], bk["energy"], bk["split"],
                                         strict=True)]
    zs = sorted({int(v) for r in rows for v in r[1]})
    counts = np.array([[np.sum(r[1] == z) for z in zs] for r in rows], float)
    energy, split = np.array([r[3] for r in rows]), np.array([r[4] for r in rows])
    parent_of = {"transfer": parents.get("plain"), "delta+transfer": parents.get("delta")}
    out = {}
    for recipe in recipes:
        if recipe == "scratch":
            pred = np.zeros(len(rows))
        elif recipe == "delta":
            pred = np.array([base[r[0]] for r in rows])
        else:
            ref = parent_of[recipe]
            if ref not in cache:
                cache[ref] = {"calc": NNPCalculator.from_registry(ref, reg, dtype="float64")}
            known = cache[ref]
            for sid, z, x, _, _ in rows:
                if sid not in known:
                    atoms = Atoms(numbers=z, positions=x)
                    atoms.calc = known["calc"]
                    known[sid] = atoms.get_potential_energy()
            pred = np.array([known[r[0]] for r in rows])
        resid = energy - pred
        train, test = split == 0, split == 2
        shifts, *_ = np.linalg.lstsq(counts[train], resid[train], rcond=None)
        out[recipe] = float(np.abs(resid[test] - counts[test] @ shifts).mean())
    return out


def untrained_compositions(reg, ref: str) -> list[str]:
    """Compositions in the test split of ``ref`` that its training split lacks."""
    m = reg.materialize(ref)
    seen = {0: set(), 2: set()}
    for bk in m.buckets:
        for z, split in zip(bk["numbers"], bk["split"], strict=True):
            if int(split) in seen:
                seen[int(split)].add(tuple(sorted(int(x) for x in z if x > 0)))
    return sorted(str(c) for c in seen[2] - seen[0])


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    from rich.console import Console

    from pipelines.cluster import dask_client
    from registry.core import Registry
    from registry.store.engine import upgrade

    args = parse_args(argv)
    console = Console()
    if args.report_only:
        rows = json.loads((args.out / "rows.json").read_text())
        report(rows, args.out, console, "ccsd(t)/cc-pvdz", {"from": "rows.json"})
        return 0
    if args.quick:
        args.dft_trajectories, args.cc_trajectories = 2, 4
        args.frames_per_trajectory, args.interval = 3, 10
        args.pretrain_epochs, args.finetune_epochs, args.patience = 4, 4, 4
        args.seeds = min(args.seeds, 2)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.finetune_config is None:
        args.finetune_config = out / "finetune.json"
        args.finetune_config.write_text(json.dumps(FINETUNE))
    pretrain_config = out / "pretrain.json"
    pretrain_config.write_text(json.dumps(PRETRAIN))
    base_cache = Path(os.environ.get("NNP_CACHE", ".nnp/cache")).resolve()
    cache = (args.cache or base_cache / "multifidelity").resolve()
    url = args.db
    if url is None:
        db = out / "registry.db"
        db.unlink(missing_ok=True)  # the check's own scratch registry, made anew each run
        url = f"sqlite:///{db}"
    upgrade(url)
    # the in-process `nnp` commands read these
    os.environ.update({"NNP_DATABASE_URL": url, "NNP_CACHE": str(base_cache),
                       "NNP_ARTIFACTS": os.environ.get("NNP_ARTIFACTS",
                                                       str(out / "artifacts"))})
    reg = Registry(url)
    t_start = time.perf_counter()
    timings = {}
    with dask_client(args.workers) as client:
        # the `nnp train` commands below submit their members to this same cluster
        os.environ["NNP_DASK_SCHEDULER"] = client.scheduler.address
        labels = label_all(reg, client, args, cache, console)
        timings["labels_s"] = time.perf_counter() - t_start
        info = ingest_all(reg, labels, console)
        low, dft, cc = (info["levels"][k] for k in ("low", "dft", "cc"))

        t0 = time.perf_counter()
        recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
        unknown = sorted(set(recipes) - set(RECIPES))
        if unknown:
            raise SystemExit(f"--recipes: unknown {unknown}; choose from {RECIPES}")
        parents = {}
        needed = {"transfer": False, "delta+transfer": True}
        for delta in sorted({needed[r] for r in recipes if r in needed}):
            ref = dataset("mf-dft" + ("-delta" if delta else ""), [dft, low] if delta else [dft],
                          split="0.8,0.1,0.1", seed=0,
                          delta=f"{dft}-{low}" if delta else None,
                          note="multi-fidelity check: ωB97X pretraining set")
            t1 = time.perf_counter()
            model = train(ref, "mf-pre" + ("-delta" if delta else ""), seed=0,
                          epochs=args.pretrain_epochs, args=args, config=pretrain_config)
            parents["delta" if delta else "plain"] = model["model"]
            test = model["metrics"]["test"]
            console.print(f"pretrained {model['model']} on {ref}: test E MAE "
                          f"{_fmt(test.get('energy_mae_ev'), EV_KCAL)} kcal/mol, F MAE "
                          f"{_fmt(test.get('forces_mae_ev_per_a'))} eV/Å "
                          f"(epochs {[m['epochs'] for m in model['members']]}, "
                          f"{time.perf_counter() - t1:.0f} s)")
        timings["pretrain_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows, predicted = [], {}
        for seed in range(args.seeds):
            plain = dataset("mf-cc", [cc], split=args.cc_split, seed=seed,
                            stratify=args.cc_stratify)
            delta = dataset("mf-cc-delta", [cc, low], split=args.cc_split, seed=seed,
                            delta=f"{cc}-{low}", stratify=args.cc_stratify)
            if not same_splits(reg, plain, delta):
                raise RuntimeError(f"{plain} and {delta} split their structures differently")
            unseen = untrained_compositions(reg, plain)
            if unseen:
                console.print(f"[yellow]{plain}: test compositions with no training structure: "
                              f"{unseen}[/]")
            runs = {"scratch": (plain, None), "delta": (delta, None),
                    "transfer": (plain, parents.get("plain")),
                    "delta+transfer": (delta, parents.get("delta"))}
            base = composition_mean_mae(reg, plain) * EV_KCAL
            rows.append({"seed": seed, "recipe": "baseline", "dataset": plain,
                         "test_mae_kcal": base})
            console.print(f"seed {seed}        baseline: train mean per composition, test MAE "
                          f"{base:.2f} kcal/mol")
            starts = starting_points(reg, plain, delta, parents, recipes, predicted)
            console.print(f"seed {seed}  starting points (shifts refit, no training): "
                          + ", ".join(f"{r} {v * EV_KCAL:.2f}" for r, v in starts.items())
                          + " kcal/mol")
            for recipe in recipes:
                ref, parent = runs[recipe]
                t1 = time.perf_counter()
                model = train(ref, f"mf-{recipe.replace('+', '-')}", seed=seed,
                              epochs=args.finetune_epochs, args=args, parent=parent,
                              config=args.finetune_config)
                test = model["metrics"]["test"]
                # a Δ model's test MAE on its Δ version is its total-energy MAE (the base
                # cancels); on the first seed every model is also scored as totals by
                # `nnp evaluate` on the plain CCSD(T) version, which adds the GFN2 base
                row = {"seed": seed, "recipe": recipe, "model": model["model"],
                       "dataset": ref, "n_train": _n(reg, ref, "train"), "n_test": test["n"],
                       "test_mae_kcal": test["energy_mae_ev"] * EV_KCAL,
                       "start_mae_kcal": starts[recipe] * EV_KCAL,
                       "test_rmse_kcal": test["energy_rmse_ev"] * EV_KCAL,
                       "epochs_run": [m["epochs"] for m in model["members"]],
                       "best_epoch": [m["best_epoch"] for m in model["members"]],
                       "train_s": round(time.perf_counter() - t1, 1)}
                if seed == 0:
                    scored = evaluate(model["model"], plain, out)
                    row.update(evaluated_on=plain, evaluated_n=scored["n"],
                               evaluated_mae_kcal=scored["energy_mae_ev"] * EV_KCAL)
                rows.append(row)
                (out / "rows.json").write_text(json.dumps(rows, indent=1))  # kept if stopped
                console.print(f"seed {seed} {recipe:>15}: {row['model']} test MAE "
                              f"{row['test_mae_kcal']:.2f} kcal/mol (n_train "
                              f"{row['n_train']}, n_test {row['n_test']}; epochs "
                              f"{row['epochs_run']}; {row['train_s']} s)"
                              + (f"; nnp evaluate on {plain}: "
                                 f"{row['evaluated_mae_kcal']:.2f} kcal/mol"
                                 if "evaluated_mae_kcal" in row else ""))
        timings["finetune_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    result = {"args": {k: str(v) for k, v in vars(args).items()}, "levels": info["levels"],
              "labels": info["labels"], "label_failures": labels["failures"],
              "parents": parents, "timings_s": {k: round(v, 1) for k, v in timings.items()},
              "url": url}
    report(rows, out, console, cc, result)
    console.print(f"total {timings['total_s'] / 60:.1f} min")
    reg.close()
    return 0


def report(rows: list[dict], out: Path, console, level: str, extra: dict) -> dict:
    """Print the table of ``rows``, write multifidelity.json and the bar chart PNG."""
    from rich.table import Table

    shown = [r for r in ("baseline", *RECIPES) if any(x["recipe"] == r for x in rows)]
    summary = {r: _stats([x["test_mae_kcal"] for x in rows if x["recipe"] == r])
               for r in shown}
    starts = {r: _stats([x["start_mae_kcal"] for x in rows if x["recipe"] == r])
              for r in shown if any("start_mae_kcal" in x for x in rows if x["recipe"] == r)}
    table = Table(title=f"{level} test energy MAE (kcal/mol), mean ± std over seeds")
    for col in ("recipe", "MAE", "before training", "seeds", "prototype"):
        table.add_column(col, justify="right" if col != "recipe" else "left")
    for r in shown:
        s = summary[r]
        start = f"{starts[r]['mean']:.2f} ± {starts[r]['std']:.2f}" if r in starts else "-"
        table.add_row(r, f"{s['mean']:.2f} ± {s['std']:.2f}", start, str(s["n"]),
                      str(PROTOTYPE.get(r, "-")))
    console.print(table)
    result = {**extra, "rows": rows, "summary": summary, "starting_points": starts}
    (out / "multifidelity.json").write_text(json.dumps(result, indent=1))
    n_train = np.mean([r["n_train"] for r in rows if "n_train" in r])
    _bar_chart(summary, out / "multifidelity.png", level, n_train)
    console.print(f"wrote {out / 'multifidelity.json'} and {out / 'multifidelity.png'}")
    return summary


def _fmt(value, scale=1.0) -> str:
    """``value * scale`` to 3 significant digits, or "-" when the split was empty."""
    return "-" if value is None else f"{value * scale:.3g}"


def _n(reg, ref, split) -> int:
    return int(reg.show_dataset(ref)["split_counts"].get(split, 0))


def _stats(values) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": len(v), "values": [round(x, 4) for x in v.tolist()]}


def _bar_chart(summary: dict, path: Path, level: str, n_train: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"baseline": "mean per\ncomposition", "scratch": "scratch",
             "delta": "Δ on GFN2", "transfer": "transfer\nfrom ωB97X",
             "delta+transfer": "Δ + transfer"}
    shown = list(summary)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(shown))
    ax.bar(x - 0.18, [summary[r]["mean"] for r in shown], 0.36,
           yerr=[summary[r]["std"] for r in shown], capsize=4, label="registry (this run)")
    proto = [PROTOTYPE.get(r, np.nan) for r in shown]
    ax.bar(x + 0.18, proto, 0.36, label="prototype", alpha=0.6)
    for i, r in enumerate(shown):
        for v in summary[r]["values"]:
            ax.plot(i - 0.18, v, "k.", ms=4)
    ax.set_xticks(x, [names[r] for r in shown])
    ax.set_ylabel("test energy MAE (kcal/mol)")
    ax.set_title(f"{level} test MAE, {n_train:.0f} training labels on average", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
