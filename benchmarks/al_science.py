"""Science check: query-by-committee vs random selection from the same candidate pool.

    python benchmarks/al_science.py [--repeats 5] [--iterations 9] [--per-iteration 10]
        [--ensemble 4] [--epochs 320] [--workdir DIR] [--png docs/img/al-science.png]
        [--report-only]

Aluminium with EMT (docs/active-learning.md#science-check). Every campaign is the real loop
(``pipelines.active_learning.campaign.start`` with ``sampler="pool"``): committee trained
(warm-started after the first iteration), committee evaluated on every pool frame not yet
labeled, ``--per-iteration`` frames selected, labeled by EMT through the labeling tasks,
ingested, the dataset version extended. The two strategies differ only in ``selection``
(``qbc``: most disagreement first, spread over the pool's trajectories; ``random``: uniform
over the same eligible frames); the threshold is tiny so both label exactly as many frames.

Pools (unlabeled EMT MD frames, 12 per trajectory, one every 20 steps of 2 fs after 60
steps): *redundant*, as real sampling produces it: 16 trajectories of bulk at 300 K, one
each of bulk at 1500 K, the (111) and (100) slabs at 900 K and the melt at 2500 K (80 % of
the frames near-equilibrium bulk); *balanced*: four trajectories of each of those five
conditions. Starting data: 8 frames of bulk at 300 K. Test set (fixed): EMT MD frames of bulk
at 300 and 900 K, the (111) slab at 600 K, the (100) slab at 900 K and the melt at 2500 K,
20 each, scored by ``pipelines.training.evaluate.evaluate`` (energy MAE per atom, force MAE
per component). Each repeat draws its own pools, starting data and training seed.

Results go to ``WORKDIR/results.json`` as each campaign finishes (a rerun skips finished
ones), the plot to ``--png``; the summary table (mean ± sample sd over the repeats where
both strategies finished) is printed. ``--report-only`` makes table and plot from the results
so far without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

POOLS = {"redundant": ["bulk 300 K"] * 16 + ["bulk 1500 K", "(111) 900 K", "(100) 900 K",
                                             "melt 2500 K"],
         "balanced": [c for c in ("bulk 300 K", "bulk 1500 K", "(111) 900 K",
                                  "(100) 900 K", "melt 2500 K") for _ in range(4)]}
# Forces weigh as much as energies: the check is about force errors.
CONFIG = {"hidden": [32, 16], "radial_shifts": 8, "angular_shifts": 4, "angular_sections": 4,
          "batch_size": 8, "lr": 3e-3, "forces_weight": 1.0}
N_START = 8


def pool(client, name: str, seed: int) -> list:
    """The pool's trajectories, one Dask task each."""
    from pipelines.active_learning.systems import emt_trajectory

    parts = client.gather([client.submit(emt_trajectory, cond, seed * 1000 + t, pure=False)
                           for t, cond in enumerate(POOLS[name])])
    out = []
    for t, (cond, frames) in enumerate(zip(POOLS[name], parts, strict=True)):
        for f in frames:
            f.info = {"trajectory": t, "condition": cond}  # unlabeled: the loop labels it
            f.arrays.pop("forces", None)
            out.append(f)
    return out


def setup(reg, client, repeat: int, work: Path) -> dict:
    """The fixed test set, and per pool: the pool file and the starting dataset version."""
    import ase.io

    from pipelines.active_learning.systems import TEST_CONDITIONS, emt_trajectory

    out = {}
    if not any(d["name"] == "al-test" for d in reg.list_datasets()):
        test = client.gather([client.submit(emt_trajectory, cond, 9000 + k, 20, pure=False)
                              for k, cond in enumerate(TEST_CONDITIONS)])
        reg.ingest([f for part in test for f in part], "emt", source="al test")
        reg.create_dataset_version("al-test", levels=["emt"], split="0,0,1",
                                   group_by="none", filter='_nnp_source = "al test"')
    dataset = f"start-{repeat}"  # the same starting data for both pools
    if not any(d["name"] == dataset for d in reg.list_datasets()):
        source = f"al science start {repeat}"
        reg.ingest(emt_trajectory("bulk 300 K", 500 + repeat, frames=N_START), "emt",
                   source=source)
        reg.create_dataset_version(dataset, levels=["emt"], split="0.75,0.25,0",
                                   group_by="none", seed=repeat,
                                   filter=f'_nnp_source = "{source}"')
    for name in POOLS:
        path = work / f"pool-{name}-{repeat}.extxyz"
        if not path.exists():
            ase.io.write(path, pool(client, name, 10 + repeat), format="extxyz")
        out[name] = {"pool": path, "dataset": dataset}
    return out


def campaign(reg, client, name: str, dataset: str, pool_path: Path, selection: str,
             args, seed: int) -> list[dict]:
    from pipelines.active_learning.campaign import resume, start
    from pipelines.active_learning.settings import Settings
    from pipelines.training.evaluate import evaluate
    from registry.active_learning.campaigns import campaign_exists, get_campaign

    s = Settings(ensemble=args.ensemble, sampler="pool", selection=selection,
                 threshold=1e-6, per_iteration=args.per_iteration,
                 iterations=args.iterations, epochs=args.epochs,
                 warm_epochs=args.epochs // 2, patience=args.epochs,
                 train_config=dict(CONFIG), seed=seed)
    t0 = time.perf_counter()
    if not campaign_exists(reg, name):
        report = start(reg, name, dataset, "emt", pool_path, s, client=client)
    elif get_campaign(reg, name)["state"] != "finished":
        report = resume(reg, name, client=client)
    else:
        from registry.active_learning.status import campaign_status

        report = campaign_status(reg, name)
    seconds = time.perf_counter() - t0
    rows, labels = [], N_START
    for it in report["iterations"]:
        m = evaluate(reg, it["model_version"], "al-test:1", split="test")["metrics"]["test"]
        rows.append({"iteration": it["iteration"], "labels": labels,
                     "energy_mev_per_atom": 1000 * m["energy_mae_ev_per_atom"],
                     "forces_mev_per_a": 1000 * m["forces_mae_ev_per_a"],
                     "n_selected": it["n_selected"], "seconds": it["seconds"],
                     "campaign_seconds": seconds})
        labels += it["n_labeled"]
    return rows


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Labels at which a (labels, error) curve first reaches ``target`` (linear between
    points); None if it never does."""
    for (l0, e0), (l1, e1) in zip(curve, curve[1:], strict=False):
        if e0 <= target:
            return float(l0)
        if e1 <= target:
            return l0 + (l1 - l0) * (e0 - target) / (e0 - e1)
    return float(curve[-1][0]) if curve and curve[-1][1] <= target else None


def summarize(results: dict) -> dict:
    out = {}
    for name in POOLS:
        # Only repeats with both strategies finished (a partial run compares like with like).
        done = sorted({int(k.rsplit("-", 1)[1]) for k in results if k.startswith(f"{name}-")})
        done = [r for r in done if all(f"{name}-{sel}-{r}" in results
                                       for sel in ("qbc", "random"))]
        runs = {sel: [results[f"{name}-{sel}-{r}"] for r in done] for sel in ("qbc", "random")}
        if not runs["qbc"] or not runs["random"]:
            continue
        n = min(len(r) for rs in runs.values() for r in rs)
        labels = [row["labels"] for row in runs["qbc"][0][:n]]
        curves = {sel: {q: np.array([[row[q] for row in r[:n]] for r in rs])
                        for q in ("energy_mev_per_atom", "forces_mev_per_a")}
                  for sel, rs in runs.items()}
        f_random = curves["random"]["forces_mev_per_a"].mean(0)
        f_qbc = curves["qbc"]["forces_mev_per_a"].mean(0)
        target = float(f_random[-1])
        reach = labels_to_reach(list(zip(labels, f_qbc, strict=True)), target)
        out[name] = {"labels": labels, "repeats": min(len(rs) for rs in runs.values()),
                     # sd: sample standard deviation over repeats
                     "curves": {sel: {q: {"mean": v.mean(0).tolist(),
                                          "sd": v.std(0, ddof=min(1, len(v) - 1)).tolist()}
                                      for q, v in c.items()} for sel, c in curves.items()},
                     "target_forces_mev_per_a": target, "qbc_labels_to_target": reach,
                     "label_ratio": None if not reach else labels[-1] / reach,
                     "label_ratio_per_repeat": [
                         None if not (x := labels_to_reach(list(zip(labels, q, strict=True)),
                                                           float(r[-1]))) else labels[-1] / x
                         for q, r in zip(curves["qbc"]["forces_mev_per_a"],
                                         curves["random"]["forces_mev_per_a"], strict=True)],
                     "seconds_per_iteration": {
                         sel: float(np.mean([sum(row["seconds"].values()) for r in rs
                                             for row in r])) for sel, rs in runs.items()}}
    return out


def plot(summary: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, len(summary), figsize=(5 * len(summary), 7), squeeze=False)
    for j, (name, s) in enumerate(summary.items()):
        for i, (q, unit) in enumerate((("forces_mev_per_a", "force MAE (meV/Å)"),
                                       ("energy_mev_per_atom", "energy MAE (meV/atom)"))):
            a = ax[i, j]
            for sel, style in (("qbc", "o-"), ("random", "s--")):
                c = s["curves"][sel][q]
                m, sd = np.array(c["mean"]), np.array(c["sd"])
                a.plot(s["labels"], m, style, label=sel)
                a.fill_between(s["labels"], m - sd, m + sd, alpha=0.2)
            if i == 0:
                a.axhline(s["target_forces_mev_per_a"], color="0.5", lw=0.8, ls=":")
            a.set(xlabel="labels", ylabel=unit, yscale="log",
                  title=f"{name} pool ({s['repeats']} repeats)")
            a.legend()
    fig.suptitle("aluminium, EMT: query-by-committee vs random from the same pool; test: EMT "
                 "MD 300-2500 K (bulk, surfaces, melt)", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=9)
    ap.add_argument("--per-iteration", type=int, default=10)
    ap.add_argument("--ensemble", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=320,
                    help="Committee training epochs (half of them when warm-started). QBC "
                         "needs committees trained this long: docs/active-learning.md.")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nnp-al-science"))
    ap.add_argument("--png", type=Path, default=ROOT / "docs/img/al-science.png")
    ap.add_argument("--pools", default="redundant,balanced")
    ap.add_argument("--tag", default="", help="Prefix of the campaign names (a new setting "
                                              "in the same workdir).")
    ap.add_argument("--report-only", action="store_true",
                    help="Only the table and plot from WORKDIR's results so far (a partial "
                         "run: the curves are cut to the shortest, repeats to the finished).")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NNP_ARTIFACTS", str(work / "artifacts"))
    os.environ.setdefault("NNP_CACHE", str(work / "cache"))
    from dask.distributed import Client, LocalCluster

    from registry.core import Registry
    from registry.store.engine import upgrade

    url = f"sqlite:///{work / 'registry.db'}"
    upgrade(url)
    results_path = work / f"results{'-' + args.tag.strip('-') if args.tag else ''}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.report_only:
        report(results, results_path, args.png)
        return
    with Registry(url) as reg, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        for r in range(args.repeats):
            files = setup(reg, client, r, work)
            for name in args.pools.split(","):
                for sel in ("qbc", "random"):
                    key = f"{name}-{sel}-{r}"
                    if key in results:
                        continue
                    results[key] = campaign(reg, client, args.tag + key,
                                            files[name]["dataset"],
                                            files[name]["pool"], sel, args, seed=r)
                    results_path.write_text(json.dumps(results, indent=1))
                    last = results[key][-1]
                    print(f"{key}: {last['labels']} labels, F MAE "
                          f"{last['forces_mev_per_a']:.1f} meV/Å, E MAE "
                          f"{last['energy_mev_per_atom']:.2f} meV/atom "
                          f"({last['campaign_seconds']:.0f} s)", flush=True)
    report(results, results_path, args.png)


def report(results: dict, results_path: Path, png: Path) -> None:
    summary = summarize(results)
    (results_path.parent / results_path.name.replace("results", "summary")).write_text(
        json.dumps(summary, indent=1))
    plot(summary, png)
    for name, s in summary.items():
        print(f"\n{name} pool, {s['repeats']} repeats (mean ± sd):")
        print("| labels | QBC F MAE (meV/Å) | random F MAE | QBC E MAE (meV/atom) | random E MAE |")
        for k, lab in enumerate(s["labels"]):
            c = s["curves"]
            print(f"| {lab} | {c['qbc']['forces_mev_per_a']['mean'][k]:.1f} ± "
                  f"{c['qbc']['forces_mev_per_a']['sd'][k]:.1f} | "
                  f"{c['random']['forces_mev_per_a']['mean'][k]:.1f} ± "
                  f"{c['random']['forces_mev_per_a']['sd'][k]:.1f} | "
                  f"{c['qbc']['energy_mev_per_atom']['mean'][k]:.2f} ± "
                  f"{c['qbc']['energy_mev_per_atom']['sd'][k]:.2f} | "
                  f"{c['random']['energy_mev_per_atom']['mean'][k]:.2f} ± "
                  f"{c['random']['energy_mev_per_atom']['sd'][k]:.2f} |")
        reach, ratio = s["qbc_labels_to_target"], s["label_ratio"]
        print(f"target (random's force MAE at {s['labels'][-1]} labels): "
              f"{s['target_forces_mev_per_a']:.1f} meV/Å; QBC reaches it at "
              f"{'-' if reach is None else format(reach, '.0f')} labels: ratio "
              f"{'-' if ratio is None else format(ratio, '.2f')} (per repeat: "
              + ", ".join("-" if x is None else f"{x:.2f}" for x in s["label_ratio_per_repeat"])
              + "); wall s per iteration: "
              + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds_per_iteration"].items()))
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
