"""t-SNE diversity maps: our pipeline against openTSNE called directly, and scikit-learn.

    nice -n 10 python benchmarks/tsne.py [--sizes 10000,50000,100000] [--new 5000]
                                         [--sklearn-max 10000] [--perplexity 30] [--idle S]
                                         [--out F]

Data (built here, nothing downloaded): rattled molecules of H, C, N and O from ASE's G2 set
(4 to 26 atoms), EMT energies, ingested into a temporary SQLite registry. For each size n,
a dataset version holds the first structures (by id) with n hydrogen environments, and one
more holds those plus ``--new`` further hydrogen environments.

Ours, end to end (one call of ``pipelines.diversity.diversity``, ``--element H``, sample = n
so nothing is subsampled, ``refit``): check the request, read the version (materialize,
cold cache), ANI-1x AEVs as Dask tasks on a pre-started one-worker, one-thread process
cluster (its start, and a first small task that imports torch and the registry in the
worker, are reported apart: a service keeps its cluster warm), openTSNE's fit, the numbers
in feature space, the map artifact (coordinates and features) with provenance, the PNG.

Direct: the same structures' arrays (already in memory), ANI-1x AEVs from torchani's
``AEVComputer.like_1x`` in batches of 128 in this process, then
``openTSNE.TSNE(perplexity, n_jobs=1, random_state=0).fit``. scikit-learn:
``sklearn.manifold.TSNE(perplexity, init="pca", n_jobs=1, random_state=0)`` (Barnes-Hut) on the
same features, up to ``--sklearn-max`` environments, after every size's openTSNE runs (a slow
Barnes-Hut fit does not hold back the larger sizes; ``--out`` is rewritten after each step).

Ratio = direct seconds / ours (≥ 0.9: the registry adds little), in wall time and in CPU time
(this process plus the Dask worker's, which a loaded machine disturbs much less). That CPU
includes the cluster's own background work for as long as the call lasts; ``--idle S`` first
measures it on the idle cluster for S seconds (``cluster_idle_cpu_per_s``, and
``ours_idle_cpu_s``: that rate times ours' full-fit wall time).

Incremental: ours again on [version n, version n + new] places the new environments into the
stored map with openTSNE's ``transform`` (end to end, and the transform phase alone), against
our full fit of the n map; openTSNE's own ``transform`` of the same points into the direct
embedding is the peer.
One thread everywhere (torch, openTSNE ``n_jobs=1``, and BLAS: ``OMP_NUM_THREADS`` and
friends default to 1 here); the machine is shared, so wall times are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread everywhere (workers inherit it)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"
BATCH = 128


def molecules() -> list:
    from ase.collections import g2

    names = [n for n in g2.names
             if set(g2[n].get_chemical_symbols()) <= {"H", "C", "N", "O"}
             and "H" in g2[n].get_chemical_symbols() and len(g2[n]) >= 4]
    return [g2[n] for n in sorted(names)]


def frames(n_hydrogen: int, seed: int = 0) -> list:
    """Rattled G2 molecules, cycling through the set, until ``n_hydrogen`` H atoms."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    base = molecules()
    out, h, i = [], 0, 0
    while h < n_hydrogen:
        a = base[i % len(base)].copy()
        a.positions += rng.normal(scale=0.08, size=a.positions.shape)
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.calc = None
        out.append(a)
        h += int((a.numbers == 1).sum())
        i += 1
    return out


def cut_ids(reg, counts: list[int]) -> dict[int, int]:
    """For each count, the structure id at which the cumulative H count reaches it."""
    mat = reg.materialize(reg.create_dataset_version("all", levels=[LEVEL])["ref"])
    sid = np.concatenate([b["structure_id"] for b in mat.buckets])
    nh = np.concatenate([(b["numbers"] == 1).sum(axis=1) for b in mat.buckets])
    order = np.argsort(sid)
    cum = np.cumsum(nh[order])
    return {c: int(sid[order][np.searchsorted(cum, c)]) for c in counts}


def direct_features(mat) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(H features, their structure ids, seconds, atoms) with torchani directly, one
    thread."""
    import torch
    from torchani.aev import AEVComputer

    aev = AEVComputer.like_1x(num_species=4)
    index = np.full(256, -1, np.int64)
    index[[1, 6, 7, 8]] = np.arange(4)
    out, sids, atoms = [], [], 0
    t = time.perf_counter()
    with torch.no_grad():
        for b in mat.buckets:
            numbers = np.asarray(b["numbers"], np.int64)
            for lo in range(0, len(numbers), BATCH):
                z = numbers[lo:lo + BATCH]
                width = int((z > 0).sum(axis=1).max())
                z = z[:, :width]
                species = torch.as_tensor(np.where(z > 0, index[z], -1))
                xyz = torch.as_tensor(b["positions"][lo:lo + BATCH, :width], dtype=torch.float32)
                f = aev(species, xyz)
                out.append(f[torch.as_tensor(z == 1)].numpy())
                sids.append(np.repeat(b["structure_id"][lo:lo + BATCH], (z == 1).sum(axis=1)))
                atoms += int((z > 0).sum())
    return np.concatenate(out), np.concatenate(sids), time.perf_counter() - t, atoms


def warm_up(reg, client) -> None:
    """One small feature task, so the worker has imported torch, torchani and the registry
    (as a long-running cluster's workers have)."""
    from pipelines.diversity.environments import read_environments
    from pipelines.diversity.features import feature_task, parse_features

    env = read_environments(reg, [reg.resolve_dataset("all")])
    spec = parse_features(reg, "aev", env.elements())
    client.submit(feature_task, reg.url, "all", env.hashes[0], spec.key, env.row[:100],
                  env.atom[:100], pure=False).result()


class Clock:
    """Timestamps of the pipeline's progress events."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}

    def __call__(self, ev: dict) -> None:
        now = time.perf_counter() - self.t0
        kind = ev["event"]
        if kind == "features":
            self.marks.setdefault("features_start", now)
            self.marks["features_end"] = now
        elif kind == "embed":
            self.marks.setdefault("embed_start", now)
        elif kind == "numbers":
            self.marks.setdefault("embed_end", now)
        else:
            self.marks.setdefault(kind, now)


def worker_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def ours(reg, refs, sample, perplexity, client, png, refit) -> tuple[dict, Clock, float, float]:
    """(result, event clock, wall seconds, CPU seconds of this process and the worker)."""
    from pipelines.diversity import diversity

    clock = Clock()
    cpu = time.process_time() + worker_cpu(client)
    t = time.perf_counter()
    out = diversity(reg, refs, elements=["H"], sample=sample, perplexity=perplexity, seed=0,
                    output=png, refit=refit, client=client, on_event=clock)
    wall = time.perf_counter() - t
    return out, clock, wall, time.process_time() + worker_cpu(client) - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--new", type=int, default=5000)
    ap.add_argument("--sklearn-max", type=int, default=10000)
    ap.add_argument("--perplexity", type=float, default=30.0)
    ap.add_argument("--idle", type=float, default=0.0,
                    help="first measure the idle cluster's CPU for this many seconds")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import logging

    import torch
    from dask.distributed import Client, LocalCluster
    from openTSNE import TSNE

    from registry.core import Registry
    from registry.store.engine import upgrade

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="nnp-tsne-"))
    os.environ["NNP_CACHE"] = str(work / "cache")
    os.environ["NNP_ARTIFACTS"] = str(work / "artifacts")
    url = f"sqlite:///{work / 'registry.db'}"
    upgrade(url)
    reg = Registry(url)
    t = time.perf_counter()
    data = frames(max(sizes) + args.new)
    reg.ingest(data, LEVEL)
    cuts = cut_ids(reg, [c for n in sizes for c in (n, n + args.new)])
    print(f"data: {len(data)} molecules, {sum(len(a) for a in data)} atoms "
          f"({time.perf_counter() - t:.0f} s to build and ingest)", flush=True)

    t = time.perf_counter()
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = Client(cluster)
    started = time.perf_counter() - t
    t = time.perf_counter()
    warm_up(reg, client)
    warmed = time.perf_counter() - t
    print(f"cluster: started in {started:.1f} s, first task (imports) {warmed:.1f} s (not "
          f"timed below)", flush=True)
    if args.idle:
        # the cluster's own background work (scheduler in this process, worker heartbeats and
        # monitors) is counted in ours' CPU for as long as a call lasts
        cpu, t = time.process_time() + worker_cpu(client), time.perf_counter()
        time.sleep(args.idle)
        cpu = time.process_time() + worker_cpu(client) - cpu
        idle = cpu / (time.perf_counter() - t)
        print(f"idle cluster: {idle:.3f} CPU s per s over {args.idle:.0f} s", flush=True)

    results, sk_features = [], {}
    for n in sizes:
        a = reg.create_dataset_version(f"h{n}", levels=[LEVEL], filter=f"id <= {cuts[n]}")
        b = reg.create_dataset_version(f"h{n}", levels=[LEVEL],
                                       filter=f"id <= {cuts[n + args.new]}")
        mat_a, mat_b = reg.materialize(a["ref"], cache=False), reg.materialize(b["ref"],
                                                                               cache=False)
        row = {"n": n}
        if args.idle:
            row["cluster_idle_cpu_per_s"] = idle
        # -- direct
        cpu = time.process_time()
        x, _, secs, atoms = direct_features(mat_a)
        row.update(n_env=len(x), direct_features_s=secs, direct_env_per_s=len(x) / secs,
                   direct_atoms_per_s=atoms / secs)
        t = time.perf_counter()
        emb = TSNE(perplexity=args.perplexity, n_jobs=1, random_state=0).fit(x)
        row["direct_tsne_s"] = time.perf_counter() - t
        row["direct_cpu_s"] = time.process_time() - cpu
        row["direct_total_s"] = row["direct_features_s"] + row["direct_tsne_s"]
        x_b, sid_b, _, _ = direct_features(mat_b)
        # -- ours: a full fit (cold materialize cache: the first read of the version)
        out, clock, total, cpu = ours(reg, [a["ref"]], len(x), args.perplexity, client,
                                      work / f"h{n}.png", refit=True)
        m = clock.marks
        h = out["elements"]["H"]
        assert h["map"]["n_points"] == len(x) == h["n_environments"], (h["map"], len(x))
        row.update(ours_total_s=total, ours_features_s=m["features_end"] - m["plan"],
                   ours_tsne_s=m["embed_end"] - m["embed_start"],
                   ours_read_s=m["plan"], ours_after_s=total - m["embed_end"])
        row["ours_env_per_s"] = len(x) / row["ours_features_s"]
        row["ours_cpu_s"] = cpu
        row["ratio_end_to_end"] = row["direct_total_s"] / total
        row["ratio_cpu"] = row["direct_cpu_s"] / cpu
        row["ratio_tsne"] = row["direct_tsne_s"] / row["ours_tsne_s"]
        # -- incremental: the new environments placed into the stored map
        out2, clock2, total2, cpu2 = ours(reg, [a["ref"], b["ref"]], len(x), args.perplexity,
                                          client, work / f"h{n}-new.png", refit=False)
        h2 = out2["elements"]["H"]
        assert h2["map"]["mode"] == "extended", h2["map"]
        m2 = clock2.marks
        row.update(n_new=h2["map"]["n_transformed"], ours_extend_total_s=total2,
                   ours_transform_s=m2["embed_end"] - m2["embed_start"])
        row["extend_over_fit"] = total2 / total
        row["ours_extend_cpu_s"] = cpu2
        row["extend_over_fit_cpu"] = cpu2 / cpu
        row["transform_over_fit"] = row["ours_transform_s"] / total
        new_x = x_b[sid_b > cuts[n]]  # the environments version b adds
        t, c = time.perf_counter(), time.process_time()
        emb.transform(new_x)
        row["direct_transform_s"] = time.perf_counter() - t
        row["direct_transform_cpu_s"] = time.process_time() - c
        row["direct_transform_over_fit_cpu"] = row["direct_transform_cpu_s"] / row["direct_cpu_s"]
        row["direct_transform_over_fit"] = row["direct_transform_s"] / row["direct_tsne_s"]
        if args.idle:  # the idle cluster's CPU over the fit call, at the rate measured above
            row["ours_idle_cpu_s"] = idle * total
        results.append(row)
        if n <= args.sklearn_max:
            sk_features[n] = x
        report(row, results, args.out)
    client.close()
    cluster.close()
    # scikit-learn last, so that a slow Barnes-Hut fit does not hold back the larger sizes
    for row in results:
        if row["n"] in sk_features:
            from sklearn.manifold import TSNE as SkTSNE

            t = time.perf_counter()
            SkTSNE(perplexity=args.perplexity, init="pca", n_jobs=1,
                   random_state=0).fit_transform(sk_features.pop(row["n"]))
            row["sklearn_tsne_s"] = time.perf_counter() - t
            report(row, results, args.out)

    print("\n| environments | AEV env/s ours | AEV env/s direct | t-SNE ours (s) | "
          "openTSNE direct (s) | sklearn (s) | end to end ours (s) | direct (s) | ratio | "
          "CPU ours (s) | CPU direct (s) | CPU ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        sk = f"{r['sklearn_tsne_s']:.1f}" if "sklearn_tsne_s" in r else "not run"
        print(f"| {r['n_env']:,} | {r['ours_env_per_s']:,.0f} | {r['direct_env_per_s']:,.0f} "
              f"| {r['ours_tsne_s']:.1f} | {r['direct_tsne_s']:.1f} | {sk} "
              f"| {r['ours_total_s']:.1f} | {r['direct_total_s']:.1f} "
              f"| {r['ratio_end_to_end']:.2f} | {r['ours_cpu_s']:.1f} | {r['direct_cpu_s']:.1f} "
              f"| {r['ratio_cpu']:.2f} |")
    print("\n| map | new points | ours: extend end to end (s) | transform phase (s) | "
          "/ full fit | extend CPU / fit CPU | openTSNE transform (s) | / its fit | CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['n_env']:,} | {r['n_new']:,} | {r['ours_extend_total_s']:.1f} "
              f"| {r['ours_transform_s']:.1f} | {r['transform_over_fit']:.3f} "
              f"| {r['extend_over_fit_cpu']:.3f} | {r['direct_transform_s']:.1f} "
              f"| {r['direct_transform_over_fit']:.3f} "
              f"| {r['direct_transform_over_fit_cpu']:.3f} |")


def report(row: dict, results: list, out: str | None) -> None:
    """Print the row and rewrite ``out`` with every row so far (a long run leaves what
    finished)."""
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
          flush=True)
    if out:
        Path(out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
