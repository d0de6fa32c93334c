"""Training speed of the two architectures on the same data: HIP-NN (hippynn) vs ANI (torchani).

    python benchmarks/train_archs.py [--n 300] [--epochs 6] [--repeat 2] [--device cpu]

Data: ``--n`` rattled H2O, NH3, CH4, CH3OH, C2H6 (3-8 atoms) labelled with ASE's EMT, built
here, ingested into a temporary SQLite registry, one dataset version (80/10/10).

Each architecture trains one member with ``pipelines.training.loop.train_member`` (what a
Dask member task runs), from the config ``ensemble.prepare`` stores, at its defaults
(docs/training.md); ANI twice: from its AEV cache (the default) and by autograd
(``aev_cache: false``), the way HIP-NN always trains. Every epoch runs (patience above
``--epochs``), one torch thread. An epoch is timed between ``on_epoch`` callbacks (the
size-bucketed batches, the updates and the validation pass) as wall time and as the CPU time
of the training thread (steadier on a shared machine). Reported: the median epoch after the
first (best of ``--repeat``, the cases run alternately), training conformations/s,
parameters, and the ratio of HIP-NN's epoch time to each ANI case's (above 1: HIP-NN slower).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from train import emt_frames  # noqa: E402

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"
MOLECULES = ("H2O", "NH3", "CH4", "CH3OH", "C2H6")
# (label, --arch, config): ANI as the pipeline trains it (from its AEV cache), ANI by autograd
# like HIP-NN (which has no cache), HIP-NN
CASES = (("ani", "ani", {}), ("ani-autograd", "ani", {"aev_cache": False}),
         ("hipnn", "hipnn", {}))
MODES = (("energy", 0.0), ("energy+forces", 0.1))


def plans(work: Path, n: int, epochs: int, device: str) -> dict:
    """{(case, mode): (TrainingData, stored config)} from one fresh registry."""
    from pipelines.training.ensemble import prepare
    from registry.core import Registry
    from registry.store.engine import upgrade

    os.environ["NNP_CACHE"] = str(work / "cache")
    os.environ["NNP_ARTIFACTS"] = str(work / "artifacts")
    url = f"sqlite:///{work / 'registry.db'}"
    upgrade(url)
    out = {}
    with Registry(url) as reg:
        reg.ingest(emt_frames(n, molecules=MOLECULES), LEVEL)
        reg.set_reference_energies(LEVEL, {"H": -0.5, "C": -1.5, "N": -2.0, "O": -2.5})
        reg.create_dataset_version("bench", levels=[LEVEL], split="0.8,0.1,0.1",
                                   group_by="none")
        for label, arch, cfg in CASES:
            for mode, fw in MODES:
                p = prepare(reg, "bench", arch=arch, ensemble=1, device=device, epochs=epochs,
                            patience=epochs + 1, forces_weight=fw, config=cfg)
                out[label, mode] = (p["data"], {**p["config"], "checkpoint_every": 0})
    return out


def epoch_seconds(data, cfg: dict, device: str) -> tuple[float, float]:
    """(wall, thread CPU) seconds of the median epoch after the first."""
    from pipelines.training.loop import train_member

    marks = [(time.perf_counter(), time.thread_time())]
    train_member(data, cfg, seed=0, device=device,
                 on_epoch=lambda _row: marks.append((time.perf_counter(), time.thread_time())))
    # the first interval also holds model construction: dropped with the warm-up epoch
    d = np.diff(np.array(marks), axis=0)[1:]
    return float(np.median(d[:, 0])), float(np.median(d[:, 1]))


def n_parameters(cfg: dict) -> int:
    from pipelines.training.archs import new_member

    return sum(p.numel() for p in new_member(cfg, 0).parameters())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="frames (default 300)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--repeat", type=int, default=2, help="runs per case; the best is kept")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    if args.n < 20 or args.epochs < 2 or args.repeat < 1:
        p.error("--n must be >= 20, --epochs >= 2, --repeat >= 1")

    import torch

    from pipelines.training.device import resolve_device

    device = resolve_device(args.device)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cases = plans(Path(tmp), args.n, args.epochs, device)
        data = next(iter(cases.values()))[0]
        n_train = data.count("train")
        print(f"data: {args.n} EMT frames ({', '.join(MOLECULES)}), {n_train} training; "
              f"device {device}, 1 thread, epochs {args.epochs}, best of {args.repeat}")
        for mode, _ in MODES:
            labels = [c[0] for c in CASES]
            wall, cpu = dict.fromkeys(labels, np.inf), dict.fromkeys(labels, np.inf)
            for _ in range(args.repeat):
                for label in labels:
                    w, c = epoch_seconds(*cases[label, mode], device)
                    wall[label], cpu[label] = min(wall[label], w), min(cpu[label], c)
            for label in labels:
                print(f"{mode:>14} {label:>12}: {wall[label]:.3f} s/epoch ({cpu[label]:.3f} s "
                      f"CPU), {n_train / wall[label]:7.1f} conf/s, "
                      f"{n_parameters(cases[label, mode][1])} parameters")
            for peer in labels[:2]:
                print(f"{mode:>14}  ratio hipnn/{peer} epoch time "
                      f"{wall['hipnn'] / wall[peer]:.2f} (CPU {cpu['hipnn'] / cpu[peer]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
