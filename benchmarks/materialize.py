"""Materialize benchmark: a dataset version into training arrays, vs ase.db ``select``.

    python benchmarks/materialize.py --n 200000 [--backends sqlite,postgresql]
        [--pg-url URL] [--ase-n 20000] [--repeat 3]

The store is loaded through the registry's ingest (``Registry.ingest_batch``) with the
synthetic ANI-like molecules of ``benchmarks/ingest.py`` (5-30 H/C/N/O atoms, energy + forces);
one dataset version holds all ``--n`` structures at one level, then ``ANALYZE`` (SQLite) or
``VACUUM ANALYZE`` and a ``CHECKPOINT`` (PostgreSQL): what autovacuum and the checkpointer do
after a bulk load; not timed. Timed (median of ``--repeat``):
``Registry.materialize(REF, cache=False)`` from each database, and ``materialize(REF)`` from a
warm cache (verified by its XXH3-128 checksum on every load). The baseline writes
``--ase-n`` of the same molecules to an ase.db SQLite file and times ``db.select()`` into the
same arrays (atomic numbers, positions, cell, energy, forces). Rates are structures per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from ingest import (  # noqa: E402
    LEVEL_A,
    PG_DEFAULT,
    batch_to_atoms,
    drop_pg,
    fresh_pg,
    fresh_sqlite,
    steady_state,
    synthetic_batch,  # noqa: E402
)

from registry.chem.frames import FrameBatch  # noqa: E402


def one_level(batch: FrameBatch) -> FrameBatch:
    batch.labels = {LEVEL_A: batch.labels[LEVEL_A]}
    return batch


def median_time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_registry(url: str, batch: FrameBatch, repeat: int, cache_dir: str) -> dict:
    from registry.core import Registry

    with Registry(url) as reg:
        t0 = time.perf_counter()
        reg.ingest_batch(batch)
        t_ingest = time.perf_counter() - t0
        t0 = time.perf_counter()
        v = reg.create_dataset_version("bench", levels=[LEVEL_A], split="0.8,0.1,0.1")
        t_create = time.perf_counter() - t0
        n = v["n_structures"]
        steady_state(reg)
        t_db, m = median_time(lambda: reg.materialize("bench", cache=False), repeat)
        reg.materialize("bench", cache_dir=cache_dir)  # build the cache
        t_cache, mc = median_time(lambda: reg.materialize("bench", cache_dir=cache_dir), repeat)
        assert mc.cache_status == "hit" and len(mc) == len(m) == n
        for a, b in zip(m.buckets, mc.buckets, strict=True):
            assert np.array_equal(a["energy"], b["energy"])
    return {"n": n, "ingest_s": t_ingest, "create_s": t_create, "db_s": t_db,
            "cache_s": t_cache, "buckets": len(m.buckets)}


def bench_asedb(atoms: list, tmp: str, repeat: int) -> float:
    """Structures/s of ase.db ``select`` into arrays (numbers, positions, cell, E, F)."""
    import ase.db

    path = f"{tmp}/ase.db"
    db = ase.db.connect(path)
    with db:
        for a in atoms:
            db.write(a)

    def load():
        nums, pos, cells, energy, forces = [], [], [], [], []
        for row in ase.db.connect(path).select():
            nums.append(row.numbers)
            pos.append(row.positions)
            cells.append(row.cell)
            energy.append(row.energy)
            forces.append(row.forces)
        return (np.concatenate(nums), np.concatenate(pos), np.array(cells), np.array(energy),
                np.concatenate(forces))

    t, out = median_time(load, repeat)
    assert len(out[3]) == len(atoms)
    return len(atoms) / t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--pg-url", default=PG_DEFAULT)
    p.add_argument("--ase-n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ase_rate = bench_asedb(batch_to_atoms(synthetic_batch(args.ase_n, seed=1), args.ase_n),
                               tmp, args.repeat)
        print(f"ase.db select into arrays ({args.ase_n} structures): {ase_rate:,.0f} /s",
              flush=True)
        for backend in backends:
            url = fresh_sqlite(tmp) if backend == "sqlite" else fresh_pg(args.pg_url)
            try:
                r = bench_registry(url, one_level(synthetic_batch(args.n, seed=0)),
                                   args.repeat, f"{tmp}/cache-{backend}")
            finally:
                if backend == "postgresql":
                    drop_pg(args.pg_url, url)
            results[backend] = r
            print(f"{backend}: ingest {r['ingest_s']:.1f} s, dataset create "
                  f"{r['create_s']:.1f} s, {r['buckets']} buckets", flush=True)
    target = {"sqlite": 300_000, "postgresql": 150_000}
    print(f"\nmaterialize, {args.n:,} structures (median of {args.repeat})")
    print(f"{'source':<12}{'seconds':>10}{'structures/s':>16}{'target':>12}{'vs ase.db':>12}")
    for backend, r in results.items():
        rate = r["n"] / r["db_s"]
        print(f"{backend:<12}{r['db_s']:>10.3f}{rate:>16,.0f}{target[backend]:>12,}"
              f"{rate / ase_rate:>11.1f}x")
    for backend, r in results.items():
        rate = r["n"] / r["cache_s"]
        print(f"{'cache':<12}{r['cache_s']:>10.3f}{rate:>16,.0f}{1_000_000:>12,}"
              f"{rate / ase_rate:>11.1f}x   (built from {backend})")
    print(f"{'ase.db':<12}{'':>10}{ase_rate:>16,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
