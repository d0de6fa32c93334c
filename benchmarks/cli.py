"""CLI start-up benchmark: each quick command in a cold process, against ``ase db``.

    python benchmarks/cli.py [--n 10000] [--repeat 9] [--workdir DIR]

Builds (or, with ``--workdir`` holding them, reuses) a SQLite registry of ``--n`` synthetic
molecules (2-24 atoms of H, C, N, O, F, S, Cl; ingested with ``Registry.ingest_batch``), the
same molecules in an ase.db SQLite file, and a registered model with a ``production`` alias.
Then, in one run, each command below is started as a new process ``--repeat`` times (after
one untimed start that writes the bytecode caches, as an installed package has them), in
turn with its ``ase db`` peer, and the median wall time, the median CPU time (user + sys of
the process) and the ratios to the peer (wall, CPU) are printed:

    nnp --help                             ase db --help
    nnp query 'nsites<=10' --count         ase db FILE.db 'natoms<=10' --count
    nnp stats                              ase db FILE.db --count
    nnp models pull bench@production       (no peer: target < 0.5 s)

A process starts cold (imports, parser tables loaded from the user's cache folder); the disk
cache is warm, as for a user typing commands. The first ``nnp query`` of a new install also
builds the filter parser's tables: that start is timed once, with an empty cache folder.
Targets (issue 18): ``--help`` < 0.3 s, the others < 0.5 s on an idle machine, and
``query --count`` / ``stats`` no slower than ``ase db --count`` in the same run. The machine's
load is printed: on a shared machine wall times swing (a process mostly waits for a core
when the load is several times the number of cores), CPU times and ratios less.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PALETTE = np.array([1, 6, 7, 8, 9, 16, 17])
WEIGHTS = np.array([0.45, 0.25, 0.1, 0.1, 0.04, 0.03, 0.03])


def molecules(n: int, seed: int = 0):
    """(numbers, positions, offsets) of ``n`` random molecules of 2-24 atoms."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 25, size=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    numbers = rng.choice(PALETTE, size=int(offsets[-1]), p=WEIGHTS)
    box = np.repeat(1.4 * np.cbrt(counts), counts)[:, None]
    positions = rng.random((int(offsets[-1]), 3)) * box
    return numbers, positions, offsets


def build(workdir: Path, n: int) -> dict:
    """The registry, the ase.db file and the model (reused when present)."""
    from registry.chem.frames import FrameBatch, LabelColumns
    from registry.core import Registry

    reg_path, ase_path = workdir / "registry.db", workdir / "ase.db"
    env = {"NNP_DATABASE_URL": f"sqlite:///{reg_path}",
           "NNP_ARTIFACTS": str(workdir / "artifacts")}
    numbers, positions, offsets = molecules(n)
    if not reg_path.exists():
        t0 = time.perf_counter()
        os.environ.update(env)
        with Registry(env["NNP_DATABASE_URL"]) as reg:  # a new database: schema created
            energy = LabelColumns(present=np.ones(n, dtype=bool),
                                  energy=np.random.default_rng(1).normal(-1e3, 50, n))
            reg.ingest_batch(FrameBatch(
                numbers=numbers, positions=positions, offsets=offsets,
                cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), dtype=bool),
                charge=np.zeros(n, dtype=np.int64), multiplicity=np.ones(n, dtype=np.int64),
                labels={"pbe/def2-svp": energy}, sources=["synthetic"] * n))
            weights = workdir / "w.safetensors"
            from safetensors.numpy import save_file

            save_file({"w": np.random.default_rng(2).random((256, 256)).astype(np.float32)},
                      str(weights))
            reg.register_model("bench", [str(weights)], architecture="ani",
                               elements=["H", "C", "N", "O"], cutoff=5.2)
            reg.set_model_alias("bench:1", "production")
        print(f"registry of {n:,} molecules written in {time.perf_counter() - t0:.1f} s")
    if not ase_path.exists():
        from ase import Atoms
        from ase.db import connect

        t0 = time.perf_counter()
        with connect(ase_path) as db:
            for i in range(n):
                lo, hi = offsets[i], offsets[i + 1]
                db.write(Atoms(numbers=numbers[lo:hi], positions=positions[lo:hi]))
        print(f"ase.db of {n:,} molecules written in {time.perf_counter() - t0:.1f} s")
    return env


def run_cold(argv: list[str], env: dict, repeat: int) -> tuple[float, float, float]:
    """(median wall s, min wall s, median CPU s) of ``repeat`` new processes."""
    subprocess.run(argv, env=env, check=True, capture_output=True)  # bytecode caches
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the databases here (reused when present)")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nnp-cli-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **build(workdir, args.n)}
    # An installed package has its bytecode compiled; a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module at every start instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    bindir = Path(sys.executable).parent
    nnp, ase = str(bindir / "nnp"), str(bindir / "ase")
    ase_db = str(workdir / "ase.db")
    pulled = str(workdir / "pulled")
    cases = [
        ("nnp --help", [nnp, "--help"], "ase db --help", [ase, "db", "--help"], 0.3),
        ("nnp query 'nsites<=10' --count", [nnp, "query", "nsites<=10", "--count"],
         "ase db FILE.db 'natoms<=10' --count", [ase, "db", ase_db, "natoms<=10", "--count"],
         0.5),
        ("nnp stats", [nnp, "stats"], "ase db FILE.db --count", [ase, "db", ase_db, "--count"],
         0.5),
        ("nnp models pull bench@production", [nnp, "models", "pull", "bench@production",
                                              "-o", pulled], None, None, 0.5),
    ]
    load = os.getloadavg()
    print(f"\n{args.n:,} molecules; {args.repeat} cold starts each; load average "
          f"{load[0]:.2f} (machine of {os.cpu_count()} CPUs)")
    floor = run_cold([sys.executable, "-c", "pass"], env, args.repeat)
    print(f"python -c pass: {floor[0]:.3f} s\n")
    head = (f"{'command':<36} {'median':>7} {'min':>6} {'cpu':>6}   {'peer':<38} "
            f"{'median':>7} {'cpu':>6}  {'wall/cpu ratio':>14}  target")
    print(head)
    print("-" * len(head))
    for name, cmd, peer_name, peer, target in cases:
        wall, low, cpu = run_cold(cmd, env, args.repeat)
        line = f"{name:<36} {wall:7.3f} {low:6.3f} {cpu:6.3f}   "
        verdict = f"< {target} s: {'yes' if wall < target else 'no'}"
        if peer is not None:
            pwall, _, pcpu = run_cold(peer, env, args.repeat)
            line += (f"{peer_name:<38} {pwall:7.3f} {pcpu:6.3f}  "
                     f"{wall / pwall:6.2f} /{cpu / pcpu:5.2f}")
            if name != "nnp --help":
                verdict += f"; <= peer: {'yes' if wall <= pwall else 'no'}"
        else:
            line += f"{'':<38} {'':>7} {'':>6}  {'':>14}"
        print(line + "  " + verdict)
    # the first query of a new install: the parser tables are built and written
    fresh = Path(tempfile.mkdtemp(prefix="nnp-cache-"))
    t0 = time.perf_counter()
    subprocess.run([nnp, "query", "nsites<=10", "--count"], check=True, capture_output=True,
                   env={**env, "XDG_CACHE_HOME": str(fresh)})
    print(f"\nfirst query with an empty cache folder (parser tables built and saved): "
          f"{time.perf_counter() - t0:.3f} s")
    shutil.rmtree(fresh, ignore_errors=True)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
