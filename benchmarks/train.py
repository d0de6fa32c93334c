"""Training throughput: our pipeline's member loop vs a plain TorchANI training loop.

    python benchmarks/train.py [--n 1000] [--epochs 6] [--repeat 3] [--device cpu|cuda|auto]

Data: ``--n`` rattled molecules of different sizes (H2O ... C6H6, 3-14 atoms) labelled with
ASE's EMT (energy and forces), built here (nothing downloaded), ingested into a temporary
SQLite registry, one dataset version (80/10/10 split), materialized, and turned into
tensors by ``pipelines.training.data.training_data``.

Ours: ``pipelines.training.loop.train_member`` (what the Dask task
``ensemble.train_member_task`` runs) with the config ``ensemble.prepare`` stores, patience
set so that every epoch runs. Its epoch is timed between ``on_epoch`` callbacks, so it
includes what the pipeline does per epoch: the size-bucketed training batches, the update,
and the validation pass (10 % of the frames, no double backward). By default an ANI member
trains from the AEV cache (``pipelines.training.aev_cache``: AEVs and their position Jacobians
computed once per dataset version, each step evaluating the atomic networks only); it is built
during the first run's first epoch (dropped from the timing, reported on its own line) and read
back by the later runs. "ours, autograd" is the same loop with ``aev_cache: false``. The
data-loading share is the time spent inside ``TrainingData.batches`` for the training split
(including the cached batches' assembly) over the epoch's time.

Plain: the TorchANI way a user would write it: the same model (``ani.new_member`` from the same
config and seed), the training split padded once to the largest molecule, a
``torch.utils.data.DataLoader`` shuffling it, AdamW, energy (and forces by autograd, double
backward) with the same loss; no validation pass.

Both: one torch thread, the same batch size, dtype, epochs and device. Conformations/s is
training frames / epoch seconds (median over epochs after the first, best of ``--repeat``);
ratio = ours / plain (higher = ours faster).
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

LEVEL = "emt"
MOLECULES = ("H2O", "NH3", "CH4", "CH3OH", "C2H6", "CH3CH2OH", "C6H6")


def emt_frames(n: int, seed: int = 0, molecules=MOLECULES) -> list:
    """``n`` rattled molecules, cycling through ``molecules``, with EMT energy and forces."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = molecule(molecules[i % len(molecules)])
        a.positions += rng.normal(scale=0.06, size=a.positions.shape)
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
        out.append(a)
    return out


def build_data(work: Path, n: int, device: str, epochs: int, batch_size: int):
    """(TrainingData, {mode: stored config}) from a fresh SQLite registry under ``work``."""
    from pipelines.training.ensemble import prepare
    from registry.core import Registry
    from registry.store.engine import upgrade

    os.environ["NNP_CACHE"] = str(work / "cache")
    os.environ["NNP_ARTIFACTS"] = str(work / "artifacts")
    url = f"sqlite:///{work / 'registry.db'}"
    upgrade(url)
    reg = Registry(url)
    try:
        reg.ingest(emt_frames(n), LEVEL)
        reg.set_reference_energies(LEVEL, {"H": -0.5, "C": -1.5, "N": -2.0, "O": -2.5})
        reg.create_dataset_version("bench", levels=[LEVEL], split="0.8,0.1,0.1",
                                   group_by="none")
        cfgs = {}
        for mode, fw in (("energy", 0.0), ("energy+forces", 0.1)):
            plan = prepare(reg, "bench", ensemble=1, device=device, epochs=epochs,
                           patience=epochs + 1, batch_size=batch_size, forces_weight=fw)
            cfgs[mode] = {**plan["config"], "checkpoint_every": 0}
            data = plan["data"]
        return data, cfgs
    finally:
        reg.close()


def run_ours(data, cfg: dict, device: str) -> tuple[list[float], list[float], str]:
    """(epoch seconds, training-batch seconds per epoch, AEV cache status) of
    ``train_member``."""
    from pipelines.training.loop import train_member

    inner = data.batches
    loading = [0.0]

    def timed_batches(split, *a, **kw):
        t = time.perf_counter()
        out = inner(split, *a, **kw)
        if split == "train":
            loading[-1] += time.perf_counter() - t
        return out

    marks, load = [], []

    def on_epoch(_row):
        marks.append(time.perf_counter())
        load.append(loading[-1])
        loading.append(0.0)

    data.batches = timed_batches
    try:
        marks.append(time.perf_counter())
        out = train_member(data, cfg, seed=0, device=device, on_epoch=on_epoch)
    finally:
        del data.batches  # the instance attribute; the class method shows through again
    # the first mark precedes model construction and the validation batches, so the first
    # epoch is dropped below with the warm-up
    return list(np.diff(marks)), load, out["aev_cache"]


def padded_train_arrays(data) -> dict:
    """The training split, every molecule padded to the largest one (one global width)."""
    from pipelines.training.data import SPLITS

    groups = [(g, g.split == SPLITS.index("train")) for g in data.groups]
    width = max(int(g.n_atoms[m].max()) for g, m in groups if m.any())
    parts = {"species": [], "coordinates": [], "energy": [], "forces": [], "n_atoms": []}
    for g, m in groups:
        if not m.any():
            continue
        k, w = int(m.sum()), g.numbers.shape[1]
        sp = np.full((k, width), -1, np.int64)
        sp[:, :w] = np.where(g.numbers[m] > 0, g.numbers[m], -1)
        xyz = np.zeros((k, width, 3))
        xyz[:, :w] = g.positions[m]
        f = np.zeros((k, width, 3))
        f[:, :w] = np.nan_to_num(g.forces[m])
        parts["species"].append(sp)
        parts["coordinates"].append(xyz)
        parts["forces"].append(f)
        parts["energy"].append(g.energy[m])
        parts["n_atoms"].append(g.n_atoms[m])
    return {k: np.concatenate(v) for k, v in parts.items()}


def run_plain(arrays: dict, cfg: dict, device: str) -> list[float]:
    """Epoch seconds of a straightforward TorchANI loop over a DataLoader."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from pipelines.training.ani import HARTREE_EV, new_member
    from pipelines.training.loop import torch_dtype

    dtype = torch_dtype(cfg["dtype"])
    fw, ew = float(cfg["forces_weight"]), float(cfg["energy_weight"])
    ds = TensorDataset(
        torch.as_tensor(arrays["species"]),
        torch.as_tensor(arrays["coordinates"], dtype=dtype),
        torch.as_tensor(arrays["energy"], dtype=dtype),
        torch.as_tensor(arrays["forces"], dtype=dtype),
        torch.as_tensor(arrays["n_atoms"], dtype=dtype))
    loader = DataLoader(ds, batch_size=int(cfg["batch_size"]), shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    model = new_member(cfg, 0, device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"],
                            weight_decay=cfg["weight_decay"])
    model.train()
    times = []
    for _ in range(int(cfg["epochs"])):
        t = time.perf_counter()
        for species, coords, energy, forces, n_atoms in loader:
            species, coords = species.to(device), coords.to(device)
            energy, forces, n_atoms = energy.to(device), forces.to(device), n_atoms.to(device)
            coords.requires_grad_(fw > 0)
            e = model((species, coords)).energies * HARTREE_EV
            loss = ew * ((e - energy) ** 2 / n_atoms.sqrt()).mean()
            if fw > 0:
                (g,) = torch.autograd.grad(e.sum(), coords, create_graph=True)
                loss = loss + fw * (((-g - forces) ** 2).sum(dim=(1, 2)) / n_atoms).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def steady(times: list[float]) -> float:
    """Median epoch seconds, the first (warm-up) epoch left out when there are others."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="frames (default 1000)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    p.add_argument("--repeat", type=int, default=3, help="runs per loop (default 3); best is kept")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    if args.n < 20 or args.epochs < 1 or args.repeat < 1 or args.batch_size < 1:
        p.error("--n must be >= 20, --epochs, --repeat and --batch-size >= 1")

    import torch

    from pipelines.training.device import resolve_device

    device = resolve_device(args.device)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        data, cfgs = build_data(Path(tmp), args.n, device, args.epochs, args.batch_size)
        n_train = data.count("train")
        print(f"data: {args.n} EMT frames ({', '.join(MOLECULES)}), {n_train} training, "
              f"{len(data.groups)} size groups; built in {time.perf_counter() - t:.1f} s")
        print(f"device {device}, torch threads {torch.get_num_threads()}, epochs "
              f"{args.epochs}, batch {args.batch_size}, repeat {args.repeat}")
        arrays = padded_train_arrays(data)
        for mode, cfg in cfgs.items():
            ours, share, plain, auto, statuses = np.inf, None, np.inf, np.inf, []
            for _ in range(args.repeat):
                torch.use_deterministic_algorithms(False)  # the plain loop as a user runs it
                plain = min(plain, steady(run_plain(arrays, cfg, device)))
                epochs, load, status = run_ours(data, cfg, device)
                statuses.append(status)
                s = steady(epochs)
                if s < ours:
                    ours = s
                    tail = slice(1, None) if len(epochs) > 1 else slice(None)
                    share = sum(load[tail]) / sum(epochs[tail])
                auto = min(auto, steady(run_ours(data, {**cfg, "aev_cache": False}, device)[0]))
            print(f"{mode:>14}: ours {n_train / ours:8.1f} conf/s   ours, autograd "
                  f"{n_train / auto:8.1f} conf/s   plain TorchANI {n_train / plain:8.1f} "
                  f"conf/s   ratio ours/plain {plain / ours:.2f} (autograd {plain / auto:.2f})"
                  f"   data loading {100 * share:.1f} % of our epoch")
            print(f"{'':>14}  AEV cache: {'; then '.join(dict.fromkeys(statuses))}; "
                  f"{data.n_structures} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
