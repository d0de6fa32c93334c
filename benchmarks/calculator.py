"""Calculator scaling on periodic fcc Al: time and memory per energy + forces call.

    nice -n 10 python benchmarks/calculator.py [--sizes 500,1000,2000,4000,8000]
        [--members 4] [--repeat 5] [--peer-max-atoms 2000] [--mem-limit-gb 12]

Model: a freshly initialised model of the production architecture (``nnp train``'s defaults:
``pipelines.training.ani.MODEL_DEFAULTS`` for one element, Al, cutoffs 5.2/3.5 Å, networks
64-32, xTB repulsion on; an ensemble of ``--members`` = 4, ``nnp train``'s default), float32.
The cost of a call does not depend on the trained weights, so none are trained.

Boxes: cubic fcc Al (a = 4.05 Å) repeated to 500, 1000, 2000, 4000 and 8000 atoms
(5x5x5, 5x5x10, 5x10x10, 10x10x10, 10x10x20 cells), rattled by 0.05 Å, periodic.

Each (method, size) runs in a fresh subprocess, so that its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the table gives that peak and its
growth over the process's size before the first call (Python, torch, model and box loaded).
Time: the fastest of ``--repeat`` energy + forces calls after one warm-up, one torch thread,
as process CPU time (``time.process_time``): on an idle machine it equals the wall time of a
one-thread call, and on this shared 2-core VM, where other jobs take the cores, it still
measures the work the call does. The wall time is printed beside it.

- **ours**: ``NNPCalculator`` (``pipelines/training/calculator.py``): energy, forces (one
  backward pass, of the ensemble mean) and ``energy_std``, neighbours from torchani's cell
  list (``pipelines/training/neighbors.py``);
- **ours_spread**: the same, also asked for ``forces_std`` (each member's forces: one
  backward pass per member);
- **torchani all-pairs** (the peer): the same torchani model through torchani's own ASE
  calculator (``model.ase()``) with its all-pairs neighbour list, mean energy and forces
  (one backward pass); run up to ``--peer-max-atoms`` atoms, beyond which its memory
  (13 periodic images x N² candidate pairs) does not fit this machine;
- **torchani cell list**: the same, with torchani's cell list: isolates what our calculator
  adds (the per-member forces) from the neighbour-list algorithm;
- **vesin** (when the ``vesin`` package is installed, ``pip install .[bench]``): our
  potential with neighbours from vesin's C++ cell list instead of torchani's, the other
  linear-scaling candidate.

Each worker is limited to ``--mem-limit-gb`` of address space (RLIMIT_AS), so a run that would
exhaust the shared machine fails with "out of memory" instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {500: (5, 5, 5), 1000: (5, 5, 10), 2000: (5, 10, 10), 4000: (10, 10, 10),
         8000: (10, 10, 20)}
METHODS = ("ours", "ours_spread", "torchani_all_pairs", "torchani_cell_list", "vesin")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def al_box(n: int):
    from ase.build import bulk

    reps = SIZES.get(n)
    if reps is None:
        raise SystemExit(f"size {n}: choose from {sorted(SIZES)}")
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat(reps)
    atoms.rattle(0.05, seed=1)
    atoms.pbc = True
    return atoms


def production_config() -> dict:
    from pipelines.training.ani import check_config

    cfg = check_config({"elements": ["Al"]})
    cfg.update(arch="ani", delta=False, self_energies_ev={"Al": 0.0},
               reference_energies_ev={"Al": 0.0})
    return cfg


def make_calculator(method: str, members: int):
    """An ASE calculator for ``method`` over freshly drawn members (seeds 0..members-1)."""
    import torch

    from pipelines.training.ani import load_ensemble, new_member

    cfg = production_config()
    sds = [new_member(cfg, seed).state_dict() for seed in range(members)]
    if method in ("ours", "ours_spread"):
        from pipelines.training.calculator import NNPCalculator

        return NNPCalculator(cfg, sds)
    if method == "vesin":
        return VesinCalculator(cfg, sds)
    nl = "all_pairs" if method == "torchani_all_pairs" else "cell_list"
    model = load_ensemble(cfg, sds, neighborlist=nl).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    assert next(model.parameters()).dtype == torch.float32
    return model.ase()


class VesinCalculator:
    """Our potential with neighbours from vesin (benchmark only): mean energy and forces."""

    def __init__(self, cfg, sds):
        from pipelines.training.potential import potential

        self.pot = potential(cfg, sds).eval()
        for p in self.pot.parameters():
            p.requires_grad_(False)
        self.results = {}

    def calculate(self, atoms, properties, system_changes):
        import numpy as np
        import torch
        from torchani.utils import map_to_central
        from vesin import NeighborList

        ani = self.pot.model
        species = torch.as_tensor(atoms.numbers).unsqueeze(0)
        x = torch.tensor(atoms.positions, dtype=torch.float32).unsqueeze(0)
        x.requires_grad_(True)
        cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float32)
        central = map_to_central(x, cell, torch.ones(3, dtype=torch.bool))
        i, j, s = NeighborList(cutoff=ani.cutoff, full_list=False).compute(
            central.detach()[0].double().numpy(), np.asarray(atoms.cell), True, "ijS")
        pairs = torch.from_numpy(np.stack([j, i]).astype(np.int64))  # torchani: x0 - x1
        shifts = torch.from_numpy(s).to(torch.float32) @ cell
        e = ani.compute_from_external_neighbors(species, central, pairs, shifts).energies
        e = e.double() * self.pot.hartree_ev
        forces = -torch.autograd.grad(e.sum(), x)[0]
        self.results = {"energy": float(e.sum()), "forces": forces[0].numpy()}


def worker(method: str, n: int, members: int, repeat: int, mem_limit_gb: float) -> dict:
    limit = int(mem_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from ase.calculators.calculator import all_changes

    torch.set_num_threads(1)
    atoms = al_box(n)
    calc = make_calculator(method, members)
    base = _rss_mb()
    times, cpu = [], []
    wanted = ["energy", "forces"] + (["forces_std"] if method == "ours_spread" else [])
    try:
        for _ in range(repeat + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            calc.calculate(atoms, wanted, all_changes)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    except (MemoryError, RuntimeError) as exc:
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        return {"method": method, "atoms": len(atoms),
                "error": f"out of memory (limit {mem_limit_gb:g} GB)"}
    return {"method": method, "atoms": len(atoms), "seconds": min(cpu[1:]),
            "wall_seconds": min(times[1:]),
            "rss_base_mb": base, "rss_peak_mb": _rss_mb(),
            "energy": float(calc.results["energy"])}


def run_one(method, n, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(n), "--members", str(args.members),
           "--repeat", str(args.repeat), "--mem-limit-gb", str(args.mem_limit_gb)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        oom = "memory" in tail.lower() or proc.returncode in (-9, 137)
        return {"method": method, "atoms": n,
                "error": f"out of memory (limit {args.mem_limit_gb:g} GB)" if oom else tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,1000,2000,4000,8000")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peer-max-atoms", type=int, default=2000)
    ap.add_argument("--mem-limit-gb", type=float, default=12.0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.members,
                                args.repeat, args.mem_limit_gb)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if "vesin" in methods:
        try:
            import vesin  # noqa: F401
        except ImportError:
            methods.remove("vesin")
            print("vesin not installed (pip install .[bench]): its column is left out")
    print(f"fcc Al, production ANI architecture, {args.members} members, float32, 1 thread, "
          f"fastest of {args.repeat} energy+forces calls; peak RSS per fresh process")
    rows: dict[int, dict[str, dict]] = {}
    for n in sizes:
        rows[n] = {}
        for m in methods:
            if m == "torchani_all_pairs" and n > args.peer_max_atoms:
                rows[n][m] = {"error": f"not run (> --peer-max-atoms {args.peer_max_atoms})"}
                continue
            r = run_one(m, n, args)
            rows[n][m] = r
            if "error" in r:
                print(f"  {m:<20} {n:>6} atoms: {r['error']}", flush=True)
            else:
                print(f"  {m:<20} {r['atoms']:>6} atoms: {r['seconds'] * 1e3:9.1f} ms CPU "
                      f"({r['wall_seconds'] * 1e3:.0f} ms wall)  "
                      f"{r['seconds'] / r['atoms'] * 1e6:7.1f} us/atom  peak "
                      f"{r['rss_peak_mb']:7.0f} MB (+{r['rss_peak_mb'] - r['rss_base_mb']:.0f})",
                      flush=True)
    report(rows, methods)


def report(rows: dict, methods: list[str]) -> None:
    """Two markdown tables (time, memory) and the ratios to the all-pairs peer."""
    ok = {n: {m: r for m, r in per.items() if "seconds" in r} for n, per in rows.items()}
    smallest = {}
    print("\n| atoms | " + " | ".join(f"{m} CPU ms (µs/atom, x)" for m in methods)
          + " | all-pairs / ours time |")
    print("|---:|" + "---:|" * (len(methods) + 1))
    for n, per in rows.items():
        cells = []
        for m in methods:
            r = per.get(m, {})
            if m not in ok[n]:
                cells.append(r.get("error", "-"))
                continue
            us = r["seconds"] / r["atoms"] * 1e6
            smallest.setdefault(m, us)
            cells.append(f"{r['seconds'] * 1e3:,.0f} ({us:.0f}, x{us / smallest[m]:.2f})")
        cells.append(_ratio(ok[n], "seconds", lambda r, k: r[k]))
        print(f"| {_atoms(per, n)} | " + " | ".join(cells) + " |")
    print("\n| atoms | " + " | ".join(f"{m} peak MB (+growth)" for m in methods)
          + " | all-pairs / ours growth |")
    print("|---:|" + "---:|" * (len(methods) + 1))
    for n, per in rows.items():
        cells = [f"{per[m]['rss_peak_mb']:,.0f} (+{_growth(per[m]):,.0f})" if m in ok[n]
                 else per.get(m, {}).get("error", "-") for m in methods]
        cells.append(_ratio(ok[n], None, lambda r, k: _growth(r)))
        print(f"| {_atoms(per, n)} | " + " | ".join(cells) + " |")
    print("\nx: time per atom over that of the smallest box (1.00 = linear scaling); growth: "
          "peak RSS minus the process's size before its first call")
    for n in rows:
        if "ours" in ok[n] and "torchani_all_pairs" in ok[n]:
            a, b = ok[n]["ours"]["energy"], ok[n]["torchani_all_pairs"]["energy"]
            print(f"{_atoms(rows[n], n)} atoms: ours and all-pairs energies differ by "
                  f"{abs(a - b) / max(abs(b), 1e-12):.1e} (relative)")


def _growth(r: dict) -> float:
    return max(r["rss_peak_mb"] - r["rss_base_mb"], 1.0)


def _ratio(per: dict, key, value) -> str:
    if "ours" not in per or "torchani_all_pairs" not in per:
        return "-"
    return f"{value(per['torchani_all_pairs'], key) / value(per['ours'], key):.2f}"


def _atoms(per: dict, n: int) -> int:
    return next((r["atoms"] for r in per.values() if "atoms" in r), n)


if __name__ == "__main__":
    main()
