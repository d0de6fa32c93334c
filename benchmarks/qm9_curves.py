"""Learning curves on QM9 U0 with the registry's own commands, for ANI and HIP-NN.

QM9 (``qm9pack``, ``bench`` extra) is shuffled with a fixed seed and ingested once (SQLite,
under ``--dir``; level ``b3lyp/6-31g(2df,p)``, U0 in eV). The last ``--n-test`` molecules of
the shuffled order form a fixed test dataset (split 0,0,1); for each training size N the first
``N / 0.9`` molecules form a train/val dataset (split 0.9,0.1,0). Each point is
``nnp train --arch A`` (one member) then ``nnp evaluate --dataset qm9-test``, all cold CLI
processes recorded as runs. Prints a table of test energy MAE (kcal/mol) per architecture and
size and writes a log-log PNG.

    python benchmarks/qm9_curves.py [--sizes 1000,10000] [--arch ani,hipnn] [--epochs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

LEVEL = "b3lyp/6-31g(2df,p)"
EV_KCAL = 23.060547830619026


def nnp(*args, env) -> dict:
    exe = str(Path(sys.executable).with_name("nnp"))
    out = subprocess.run([exe, *map(str, args)], env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"nnp {' '.join(map(str, args))} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout) if "--json" in args else {}


def build(url: str, n_total: int, seed: int) -> None:
    import numpy as np
    import qm9data

    from registry.core import Registry
    from registry.io.atoms import atoms_to_batch
    from registry.store.engine import upgrade

    mols = list(qm9data.atoms())
    order = np.random.default_rng(seed).permutation(len(mols))[:n_total]
    upgrade(url)
    with Registry(url) as reg:
        for lo in range(0, len(order), 20000):
            chunk = [mols[i] for i in order[lo:lo + 20000]]
            reg.ingest_batch(atoms_to_batch(chunk, LEVEL, source="qm9")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000", help="training molecules per point")
    ap.add_argument("--arch", default="ani,hipnn")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default="/tmp/nnp-bench/qm9-curves")
    ap.add_argument("--png", default="qm9-learning-curves.png")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    archs = a.arch.split(",")
    n_pool = round(max(sizes) / 0.9) + 1
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    db = root / f"qm9-{n_pool + a.n_test}-s{a.seed}.db"
    url = f"sqlite:///{db}"
    env = {**os.environ, "NNP_DATABASE_URL": url, "NNP_ARTIFACTS": str(root / "artifacts"),
           "NNP_CACHE": str(root / "cache")}
    env.pop("NNP_DASK_SCHEDULER", None)
    if not db.exists():
        t0 = time.perf_counter()
        build(url, n_pool + a.n_test, a.seed)
        print(f"ingested {n_pool + a.n_test} QM9 molecules in {time.perf_counter() - t0:.0f} s")
    existing = {d["name"] for d in nnp("dataset", "list", "--json", env=env)}
    if "qm9-test" not in existing:
        nnp("dataset", "create", "qm9-test", "--level", LEVEL, "--filter", f"id > {n_pool}",
            "--split", "0,0,1", "--group-by", "none", "--json", env=env)
    rows = []
    for n in sizes:
        name = f"qm9-{n}"
        if name not in existing:
            nnp("dataset", "create", name, "--level", LEVEL, "--filter",
                f"id <= {round(n / 0.9)}", "--split", "0.9,0.1,0", "--group-by", "none",
                "--seed", a.seed, "--json", env=env)
        for arch in archs:
            t0 = time.perf_counter()
            trained = nnp("train", "--dataset", name, "--arch", arch, "--ensemble", 1,
                          "--epochs", a.epochs, "--patience", a.patience, "--batch-size",
                          a.batch_size, "--seed", a.seed, "--name", f"{name}-{arch}",
                          "--no-verify", "--json", env=env)
            seconds = time.perf_counter() - t0
            scored = nnp("evaluate", trained["model"], "--dataset", "qm9-test", "--split",
                         "test", "-o", root / f"{name}-{arch}-parity.png", "--json", env=env)
            test = scored["metrics"]["test"]
            rows.append({"arch": arch, "n_train": trained["metrics"]["train"]["n"],
                         "model": trained["model"], "seconds": round(seconds),
                         "mae_kcal": test["energy_mae_ev"] * EV_KCAL,
                         "rmse_kcal": test["energy_rmse_ev"] * EV_KCAL, "n_test": test["n"]})
            r = rows[-1]
            print(f"{arch:6s} n_train {r['n_train']:>6}  test MAE {r['mae_kcal']:7.2f} kcal/mol"
                  f"  RMSE {r['rmse_kcal']:7.2f}  ({r['n_test']} test, {r['seconds']} s)",
                  flush=True)
            # after every point, so an interrupted run keeps what it measured
            (root / "results.json").write_text(json.dumps(rows, indent=2))
            plot(rows, a.png)
    print(f"wrote {a.png} and {root / 'results.json'}")


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for arch in sorted({r["arch"] for r in rows}):
        pts = sorted((r["n_train"], r["mae_kcal"]) for r in rows if r["arch"] == arch)
        ax.plot(*zip(*pts, strict=True), "o-", label=arch)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training molecules")
    ax.set_ylabel("test MAE, U0 (kcal/mol)")
    ax.set_title("QM9 learning curves (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
