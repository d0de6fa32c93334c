"""Active learning: committee inference throughput, and the loop's bookkeeping overhead.

    python benchmarks/al.py [--members 4] [--frames 64] [--repeat 5] [--campaign]

1. Committee inference (what sampling and pool selection spend their time on): ``--frames``
   periodic 32-atom aluminium cells (EMT MD at 900 K, one cell), each member's energy.
   Ours: one torchani model whose ``Ensemble`` holds the K members
   (``pipelines.training.ani.load_ensemble``, as ``NNPCalculator`` builds it): the AEV is
   computed once and the K networks run on it. Peer: K separate TorchANI models (each a full
   ANI: AEV + one network), evaluated one after another, the way a committee of
   independently loaded models is run. Both go frame by frame
   (``pipelines.training.periodic``: torchani's periodic neighbour list serves one frame).
   Both: the same weights, float32, one torch thread, no gradient (energies); and again with forces
   (autograd of the energies, the MD case). Frames/s = frames / CPU seconds per call (the
   median of ``--repeat``, the two taking turns; CPU time, so other jobs on a shared machine
   do not enter); ratio = ours / peer.
2. ``--campaign``: a two-iteration campaign (tiny aluminium, EMT, 2 members, in-process Dask)
   on a temporary SQLite registry; per iteration, the wall time of its phases and the share
   spent on the campaign's own bookkeeping (reads and writes of its state tables, in the
   driver and in the sampling and labeling tasks). Target: < 5 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
CONFIG = {"hidden": [64, 32], "radial_shifts": 16, "angular_shifts": 8,
          "angular_sections": 4, "elements": ["Al"]}


def frames(n: int):
    from pipelines.active_learning.systems import al_bulk, emt_md

    return emt_md(al_bulk(), 900.0, 20 * n, seed=0, every=20)[:n]


def timed(fns: dict, repeat: int) -> dict:
    """CPU seconds per call of each function (this process, one torch thread: insensitive to
    other jobs on a shared machine): the median of ``repeat`` runs, the functions taking
    turns."""
    for fn in fns.values():
        fn()  # warm-up (allocations, neighbour-list sizes)
    out: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            out[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in out.items()}


def committee_throughput(k: int, n: int, repeat: int) -> list[dict]:
    import torch

    from pipelines.training.ani import check_config, load_ensemble, new_member
    from pipelines.training.periodic import model_energies

    torch.set_num_threads(1)
    cfg = check_config(dict(CONFIG))
    cfg["self_energies_ev"] = {"Al": 0.0}
    members = [new_member(cfg, seed).state_dict() for seed in range(k)]
    ours = load_ensemble(cfg, members, neighborlist="all_pairs").eval()
    peers = [load_ensemble(cfg, [sd], neighborlist="all_pairs").eval() for sd in members]
    fr = frames(n)
    species = torch.as_tensor(np.stack([f.numbers for f in fr]), dtype=torch.long)
    coords = torch.as_tensor(np.stack([f.positions for f in fr]), dtype=torch.float32)
    cell = torch.as_tensor(np.asarray(fr[0].cell), dtype=torch.float32)
    pbc = torch.ones(3, dtype=torch.bool)
    e_ours = model_energies(ours, species, coords, cell, pbc, ensemble_values=True).detach()
    e_peer = torch.stack([model_energies(p, species, coords, cell, pbc).detach()
                          for p in peers])
    assert torch.allclose(e_ours, e_peer, atol=1e-4), "the two ways disagree"
    rows = []
    for forces in (False, True):
        def run_ours(forces=forces):
            x = coords.clone().requires_grad_(forces)
            with torch.set_grad_enabled(forces):
                e = model_energies(ours, species, x, cell, pbc, ensemble_values=True)
                if forces:
                    torch.autograd.grad(e.mean(0).sum(), x)

        def run_peer(forces=forces):
            for p in peers:
                x = coords.clone().requires_grad_(forces)
                with torch.set_grad_enabled(forces):
                    e = model_energies(p, species, x, cell, pbc)
                    if forces:
                        torch.autograd.grad(e.sum(), x)

        t = timed({"ours": run_ours, "peer": run_peer}, repeat)
        t_ours, t_peer = t["ours"], t["peer"]
        rows.append({"what": "energies + forces" if forces else "energies",
                     "ours_fps": n / t_ours, "peer_fps": n / t_peer, "ratio": t_peer / t_ours})
    return rows


def campaign_overhead() -> list[dict]:
    import ase.io
    from ase.calculators.emt import EMT
    from dask.distributed import Client, LocalCluster

    from pipelines.active_learning.campaign import start
    from pipelines.active_learning.settings import Settings
    from pipelines.active_learning.systems import al_bulk
    from registry.core import Registry
    from registry.store.engine import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="nnp-al-bench-"))
    os.environ["NNP_ARTIFACTS"] = str(tmp / "artifacts")
    os.environ["NNP_CACHE"] = str(tmp / "cache")
    url = f"sqlite:///{tmp / 'registry.db'}"
    upgrade(url)
    rng = np.random.default_rng(0)
    data = []
    for k in range(24):
        a = al_bulk((-0.02, 0.0, 0.02)[k % 3])
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        a.calc = EMT()
        a.info["energy"], a.arrays["forces"] = a.get_potential_energy(), a.get_forces()
        a.calc = None
        data.append(a)
    seeds = tmp / "seeds.extxyz"
    ase.io.write(seeds, [al_bulk()], format="extxyz")
    s = Settings(ensemble=2, temperatures=[600.0, 1200.0], steps=100, interval=10,
                 timestep_fs=2.0, threshold=1e-3, per_iteration=8, iterations=2, epochs=30,
                 warm_epochs=15, min_distance=1.8,
                 train_config={"hidden": [32, 16], "radial_shifts": 8, "angular_shifts": 4,
                               "batch_size": 8})
    with Registry(url) as reg, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        reg.ingest(data, "emt")
        reg.create_dataset_version("al0", levels=["emt"], group_by="none")
        out = start(reg, "bench", "al0", "emt", seeds, s, client=client)
    rows = []
    for it in out["iterations"]:
        sec = it["seconds"]
        total = sum(v for k, v in sec.items() if k != "bookkeeping")
        rows.append({"iteration": it["iteration"], "seconds": total,
                     "bookkeeping": sec.get("bookkeeping", 0.0),
                     "share": sec.get("bookkeeping", 0.0) / total,
                     **{k: v for k, v in sec.items() if k != "bookkeeping"}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--campaign", action="store_true")
    args = ap.parse_args()
    print(f"committee of {args.members}, {args.frames} periodic Al32 frames, 1 thread, "
          f"float32")
    for r in committee_throughput(args.members, args.frames, args.repeat):
        print(f"  {r['what']:18s} ours {r['ours_fps']:8.1f} frames/s   K separate models "
              f"{r['peer_fps']:8.1f} frames/s   ratio {r['ratio']:.2f}")
    if args.campaign:
        print("campaign bookkeeping (2 iterations, tiny aluminium, SQLite):")
        for r in campaign_overhead():
            phases = ", ".join(f"{k} {r[k]:.2f}" for k in ("train", "sample", "select",
                                                           "label", "ingest", "dataset"))
            print(f"  iteration {r['iteration']}: {r['seconds']:.1f} s ({phases}); "
                  f"bookkeeping {r['bookkeeping']:.3f} s = {100 * r['share']:.2f} %")


if __name__ == "__main__":
    main()
