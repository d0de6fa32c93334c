"""Query benchmark: a selective OPTIMADE filter over 1,000,000 synthetic structures.

    python benchmarks/query.py [--n 1000000] [--pg-url URL] [--reuse] [--ase-n 100000]
        [--repeat 30] [--filter TEXT]

Structures are loaded with the registry's own ingest (``Registry.ingest_batch``), so schema,
indexes and rows are exactly what ingest produces; then VACUUM ANALYZE (planner statistics
and the visibility map that lets PostgreSQL answer from index-only scans). Each molecule has 2-24
atoms drawn from 1-4 elements of a 10-element palette; every structure has an energy+forces
label at ``pbe/def2-svp`` and 4 % of those with at most 12 atoms also one at
``ccsd(t)/cc-pvdz``. Timed: ``Registry.count(FILTER)`` and ``Registry.query_ids(FILTER)``
end to end (parse, compile, level lookup, SQL), median over ``--repeat`` after 3 warm-ups.

ase.db's closest query (``db.count("C,N,natoms<=12,ccsd_t=1")``, the level as a key-value
pair) runs on an ase.db SQLite file of ``--ase-n`` of the same molecules (writing 1,000,000
rows into ase.db takes too long); the registry's count on a SQLite registry of the same
``--ase-n`` molecules is printed beside it for a like-for-like ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import median_seconds, steady_state  # noqa: E402

from registry.chem.frames import FrameBatch, LabelColumns  # noqa: E402

LOW, HIGH = "pbe/def2-svp", "ccsd(t)/cc-pvdz"
FILTER = f'elements HAS ALL "C","N" AND nsites<=12 AND _nnp_levels HAS "{HIGH}"'
PALETTE = np.array([1, 6, 7, 8, 9, 14, 15, 16, 17, 35])
WEIGHTS = np.array([0.3, 0.2, 0.1, 0.15, 0.05, 0.03, 0.03, 0.07, 0.04, 0.03])
PG_DEFAULT = os.environ.get(
    "NNP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres")
DB_NAME = "nnp_bench_query"


def synthetic(n: int, seed: int) -> FrameBatch:
    """``n`` random molecules (2-24 atoms of 1-4 elements) with one or two label levels."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 25, size=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    kinds = rng.integers(1, 5, size=n)
    # per structure: a random subset of the palette, then atoms drawn from it
    keys = rng.random((n, len(PALETTE))) ** (1.0 / WEIGHTS)  # weighted, no replacement
    subsets = np.argsort(-keys, axis=1)[:, :4]
    owner = np.repeat(np.arange(n), counts)
    pick = (rng.random(total) * kinds[owner]).astype(np.int64)
    numbers = PALETTE[subsets[owner, pick]]
    box = np.repeat(1.4 * np.cbrt(counts), counts)[:, None]
    positions = rng.random((total, 3)) * box
    low = LabelColumns(present=np.ones(n, dtype=bool), energy=rng.normal(-1e4, 1e3, n),
                       forces=rng.normal(0, 1, (total, 3)))
    high = LabelColumns(present=(counts <= 12) & (rng.random(n) < 0.04),
                        energy=rng.normal(-1e4, 1e3, n))
    return FrameBatch(numbers=numbers, positions=positions, offsets=offsets,
                      cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), dtype=bool),
                      charge=np.zeros(n, dtype=np.int64),
                      multiplicity=np.ones(n, dtype=np.int64), labels={LOW: low, HIGH: high},
                      sources=["synthetic"] * n)


def load(reg, n: int, chunk: int = 100_000, start: int = 0) -> float:
    """Add ``n`` generated structures to a database holding ``start``; each chunk's seed
    follows its position, so extending a database adds new molecules, not repeats."""
    t0 = time.perf_counter()
    for lo in range(start, start + n, chunk):
        m = min(chunk, start + n - lo)
        reg.ingest_batch(synthetic(m, seed=lo // chunk), batch_size=25_000)
        print(f"  loaded {lo + m:,} structures ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return time.perf_counter() - t0


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after 3 warm-ups."""
    return median_seconds(fn, repeat)


def pg_database(admin_url: str, reuse: bool, name: str = DB_NAME) -> tuple[str, bool]:
    """URL of the benchmark database ``name``; True if it was (re)created empty."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(admin_url)
    info = (f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username} "
            f"password={u.password or ''} dbname={u.database or 'postgres'}")
    url = u.set(database=name, drivername="postgresql+psycopg").render_as_string(False)
    with psycopg.connect(info, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (name,)).fetchone()
        if exists and reuse:
            return url, False
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a name from this script
        conn.execute(f'CREATE DATABASE "{name}"')
    return url, True


def bench_registry(url: str, n: int, fresh: bool, filt: str, repeat: int) -> dict:
    from sqlalchemy import text

    from registry.core import Registry
    from registry.store.engine import upgrade

    if fresh:
        upgrade(url)
    with Registry(url) as reg:
        have = reg.count()
        if have < n:
            print(f"loading {n - have:,} structures into {reg.dialect} ...", flush=True)
            secs = load(reg, n - have, start=have)
            print(f"  ingest: {secs:.0f} s ({(n - have) / secs:,.0f} structures/s)")
        steady_state(reg)  # statistics + visibility map (index-only scans skip the heap)
        out = {"structures": reg.count(), "matches": reg.count(filt),
               "count_s": timed(lambda: reg.count(filt), repeat),
               "ids_s": timed(lambda: reg.query_ids(filt), repeat)}
        if reg.dialect == "postgresql":
            from sqlalchemy import func, select

            from registry.query import structure_filter
            from registry.store.schema import Structure

            with reg.session() as s:
                q = select(func.count()).select_from(Structure).where(
                    structure_filter(filt, session=s))
                sql = q.compile(reg.engine, compile_kwargs={"literal_binds": True})
                plan = s.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}")).scalars().all()
            out["plan"] = "\n".join(plan)
    return out


def bench_asedb(n: int, repeat: int) -> dict:
    """Write ``n`` of the same molecules into ase.db (SQLite) and time its closest query."""
    from ase import Atoms
    from ase.db import connect

    batch = synthetic(n, seed=0)
    path = Path(tempfile.mkdtemp()) / "ase.db"
    db = connect(path)
    t0 = time.perf_counter()
    high = batch.labels[HIGH].present
    with db:
        for i in range(n):
            lo, hi = batch.offsets[i], batch.offsets[i + 1]
            kv = {"ccsd_t": 1} if high[i] else {}
            db.write(Atoms(numbers=batch.numbers[lo:hi], positions=batch.positions[lo:hi]),
                     **kv)
    write_s = time.perf_counter() - t0
    query = "C,N,natoms<=12,ccsd_t=1"
    return {"rows": n, "write_s": write_s, "query": query, "matches": db.count(query),
            "count_s": timed(lambda: db.count(query), repeat),
            "ids_s": timed(lambda: [r.id for r in db.select(query, include_data=False)],
                           repeat)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--pg-url", default=PG_DEFAULT)
    ap.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    ap.add_argument("--ase-n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--filter", default=FILTER)
    args = ap.parse_args(argv)

    url, fresh = pg_database(args.pg_url, args.reuse)
    pg = bench_registry(url, args.n, fresh, args.filter, args.repeat)
    print(f"\nfilter: {args.filter}")
    print(f"PostgreSQL registry, {pg['structures']:,} structures, {pg['matches']:,} matches:")
    print(f"  count    median {pg['count_s'] * 1e3:8.2f} ms")
    print(f"  id list  median {pg['ids_s'] * 1e3:8.2f} ms")
    print("plan (count):\n  " + pg["plan"].replace("\n", "\n  "))
    if args.ase_n <= 0:
        return
    tmp = Path(tempfile.mkdtemp()) / "registry.db"
    lite = bench_registry(f"sqlite:///{tmp}", args.ase_n, True, args.filter, args.repeat)
    ase = bench_asedb(args.ase_n, args.repeat)
    print(f"\nsmaller databases of {args.ase_n:,} of the same molecules (SQLite files):")
    print(f"  registry (SQLite) {lite['matches']:,} matches: count "
          f"{lite['count_s'] * 1e3:.2f} ms, id list {lite['ids_s'] * 1e3:.2f} ms")
    print(f"  ase.db  {ase['query']!r} {ase['matches']:,} matches: count "
          f"{ase['count_s'] * 1e3:.2f} ms, id list {ase['ids_s'] * 1e3:.2f} ms "
          f"(writing {ase['rows']:,} rows took {ase['write_s']:.0f} s)")
    print(f"  ratio ase.db / registry (same {args.ase_n:,} rows, SQLite): count "
          f"{ase['count_s'] / lite['count_s']:.1f}x, id list "
          f"{ase['ids_s'] / lite['ids_s']:.1f}x")
    print(f"  ratio ase.db ({args.ase_n:,} rows, SQLite) / registry ({pg['structures']:,} "
          f"rows, PostgreSQL): count {ase['count_s'] / pg['count_s']:.1f}x")


if __name__ == "__main__":
    main()
