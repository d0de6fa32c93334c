"""Ingest benchmark: synthetic ANI-like molecules into PostgreSQL, SQLite and ase.db.

    python benchmarks/ingest.py --n 200000 [--backends sqlite,postgresql,asedb]
        [--pg-url URL] [--ase-n 20000] [--atoms-n 20000] [--repeat 3] [--batch-size 20000]

Each molecule has 5-30 atoms of H, C, N, O, an energy and forces at one level and, for 10 %
of them, a second level. Every timed ingest goes into a fresh database (schema created
before the clock starts); labels are included. Rates are structures per second, medians over
``--repeat`` runs. ``raw-copy`` is a binary COPY of the same bytes (hashes, numbers,
positions, energies, forces) into bare tables: the upper bound for PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.chem.frames import FrameBatch, LabelColumns  # noqa: E402

LEVEL_A = "wb97x/6-31g*"
LEVEL_B = "ccsd(t)/cc-pvdz"
PG_DEFAULT = os.environ.get(
    "NNP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres")


def synthetic_batch(n: int, seed: int = 0, second_fraction: float = 0.1) -> FrameBatch:
    """``n`` random H/C/N/O molecules (5-30 atoms) with labels at one or two levels."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(5, 31, size=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    numbers = rng.choice(np.array([1, 6, 7, 8]), size=total, p=[0.5, 0.3, 0.1, 0.1])
    box = np.repeat(1.4 * np.cbrt(counts), counts)[:, None]
    positions = rng.random((total, 3)) * box
    a = LabelColumns(present=np.ones(n, dtype=bool), energy=rng.normal(-1e4, 1e3, n),
                     forces=rng.normal(0, 1, (total, 3)))
    present_b = rng.random(n) < second_fraction
    b = LabelColumns(present=present_b, energy=rng.normal(-1e4, 1e3, n),
                     forces=rng.normal(0, 1, (total, 3)))
    return FrameBatch(numbers=numbers, positions=positions, offsets=offsets,
                      cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), dtype=bool),
                      charge=np.zeros(n, dtype=np.int64),
                      multiplicity=np.ones(n, dtype=np.int64), labels={LEVEL_A: a, LEVEL_B: b})


def batch_to_atoms(batch: FrameBatch, n: int) -> list:
    """The first ``n`` frames as ASE Atoms with a SinglePointCalculator (level A) and the
    level-B energy/forces in ``info``/``arrays`` where present."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    a, b = batch.labels[LEVEL_A], batch.labels[LEVEL_B]
    out = []
    for i in range(n):
        lo, hi = batch.offsets[i], batch.offsets[i + 1]
        atoms = Atoms(numbers=batch.numbers[lo:hi], positions=batch.positions[lo:hi])
        atoms.calc = SinglePointCalculator(atoms, energy=float(a.energy[i]),
                                           forces=a.forces[lo:hi].copy())
        if b.present[i]:
            atoms.info["energy_ccsd"] = float(b.energy[i])
            atoms.arrays["forces_ccsd"] = b.forces[lo:hi].copy()
        out.append(atoms)
    return out


# ------------------------------------------------------------------------ databases
def _admin(pg_url: str):
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    return psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username,
                           password=u.password or "", dbname=u.database or "postgres",
                           autocommit=True)


def fresh_pg(pg_url: str, schema: bool = True) -> str:
    from psycopg import sql
    from sqlalchemy.engine import make_url

    from registry.store.engine import upgrade

    name = f"nnp_bench_{uuid.uuid4().hex[:10]}"
    with _admin(pg_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(pg_url).set(database=name, drivername="postgresql+psycopg") \
        .render_as_string(hide_password=False)
    if schema:
        upgrade(url)
    quiet_server(pg_url)
    return url


def quiet_server(pg_url: str) -> None:
    """Checkpoint (where the role may), so a timed run does not share the server with the
    checkpointer writing out the previous run's load."""
    import psycopg

    with _admin(pg_url) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error:  # needs superuser or pg_checkpoint
            pass


def drop_pg(pg_url: str, url: str) -> None:
    from psycopg import sql
    from sqlalchemy.engine import make_url

    with _admin(pg_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(make_url(url).database)))


def fresh_sqlite(tmp: str) -> str:
    from registry.store.engine import upgrade

    url = f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:8]}.db"
    upgrade(url)
    return url


def median_seconds(fn, repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def steady_state(reg) -> None:
    """Statistics (and on PostgreSQL the visibility map) after a bulk load, as autovacuum
    would leave them, so timed reads neither race it nor run on a fresh table's guesses; on
    PostgreSQL also a checkpoint (where the role may), so the load's dirty pages are not
    written out by the checkpointer during the timed reads."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    if reg.dialect == "postgresql":
        with reg.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
            try:
                c.execute(text("CHECKPOINT"))
            except DBAPIError as exc:  # needs superuser or pg_checkpoint
                print(f"  (no CHECKPOINT: {str(exc.orig).strip()})")
    else:
        with reg.engine.begin() as c:
            c.execute(text("ANALYZE"))


# ----------------------------------------------------------------------------- runs
def time_registry(url: str, data, batch_size: int, **kw) -> tuple[float, dict]:
    from registry.core import Registry

    reg = Registry(url)
    try:
        t0 = time.perf_counter()
        summary = reg.ingest(data, batch_size=batch_size, **kw)
        dt = time.perf_counter() - t0
    finally:
        reg.close()
    return dt, summary.to_dict()


def time_asedb(atoms: list, tmp: str) -> float:
    import ase.db

    path = f"{tmp}/ase-{uuid.uuid4().hex[:8]}.db"
    db = ase.db.connect(path)
    t0 = time.perf_counter()
    with db:
        for a in atoms:
            data = {k: a.arrays[k] for k in ("forces_ccsd",) if k in a.arrays}
            if "energy_ccsd" in a.info:
                data["energy_ccsd"] = a.info["energy_ccsd"]
            db.write(a, data=data)
    dt = time.perf_counter() - t0
    os.unlink(path)
    return dt


def _copy_stream(cols: list[tuple[str, object]], n: int) -> bytes:
    """A PostgreSQL binary COPY stream for ``n`` rows built with numpy (no per-row Python).

    ``cols`` holds ("f8", array) fixed-width columns or ("var", (buffer, offsets)) columns of
    variable-length values."""
    sizes = np.full(n, 2, dtype=np.int64)  # int16 field count
    parts = []
    for kind, val in cols:
        if kind == "f8":
            sizes += 4 + 8
            parts.append((kind, np.ascontiguousarray(val, dtype=">f8").view(np.uint8)
                          .reshape(n, 8)))
        else:
            buf, off = val
            ln = np.diff(off)
            sizes += 4 + ln
            parts.append((kind, (np.frombuffer(buf, dtype=np.uint8), off, ln)))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = np.empty(int(starts[-1]), dtype=np.uint8)
    out[_ranges(starts[:-1], 2)] = np.tile(np.frombuffer(np.array(len(cols), ">i2").tobytes(),
                                                         np.uint8), n)
    pos = starts[:-1] + 2
    for kind, val in parts:
        if kind == "f8":
            out[_ranges(pos, 4)] = np.tile(np.frombuffer(np.array(8, ">i4").tobytes(),
                                                         np.uint8), n)
            out[_ranges(pos + 4, 8)] = val.ravel()
            pos = pos + 12
        else:
            flat, off, ln = val
            out[_ranges(pos, 4)] = ln.astype(">i4").view(np.uint8)
            out[_ranges(pos + 4, ln)] = flat[off[0]:off[-1]]
            pos = pos + 4 + ln
    header = b"PGCOPY\n\xff\r\n\0" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    return header + out.tobytes() + b"\xff\xff"


def _ranges(starts, lengths) -> np.ndarray:
    """Concatenated aranges ``starts[i] : starts[i] + lengths[i]``."""
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), starts.shape)
    total = int(lengths.sum())
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return rep + np.arange(total)


def time_raw_copy(pg_url: str, batch: FrameBatch) -> float:
    """Binary COPY of the same bytes into bare tables (structures + both levels' labels)."""
    import psycopg
    from sqlalchemy.engine import make_url

    n = len(batch)
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 16, size=64 * n).astype(np.uint8)
    hashes = np.where(hashes < 10, hashes + 48, hashes + 87).astype(np.uint8).tobytes()
    hoff = np.arange(n + 1, dtype=np.int64) * 64
    off = batch.offsets
    nb = batch.numbers.astype(np.uint8).tobytes()
    pb = batch.positions.astype("<f8").tobytes()
    s_stream = _copy_stream([("var", (hashes, hoff)), ("var", (nb, off)),
                             ("var", (pb, off * 24))], n)
    l_streams = []
    for lv in (LEVEL_A, LEVEL_B):
        c = batch.labels[lv]
        idx = np.flatnonzero(c.present)
        counts = np.diff(off)[idx]
        fo = np.concatenate([[0], np.cumsum(counts * 24)])
        fb = c.forces[_ranges(off[idx], counts)].astype("<f8").tobytes()
        l_streams.append(_copy_stream([("f8", idx.astype(np.float64)), ("f8", c.energy[idx]),
                                       ("var", (fb, fo))], len(idx)))
    url = fresh_pg(pg_url, schema=False)
    u = make_url(url)
    try:
        with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username,
                             password=u.password or "", dbname=u.database) as conn:
            conn.execute("CREATE TABLE s (hash text, numbers bytea, positions bytea)")
            conn.execute("CREATE TABLE l (sidx float8, energy float8, forces bytea)")
            conn.commit()
            t0 = time.perf_counter()
            with conn.cursor() as cur:
                with cur.copy("COPY s FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(s_stream)
                for stream in l_streams:
                    with cur.copy("COPY l FROM STDIN (FORMAT BINARY)") as cp:
                        cp.write(stream)
            conn.commit()
            dt = time.perf_counter() - t0
            assert conn.execute("SELECT count(*) FROM s").fetchone()[0] == n
    finally:
        drop_pg(pg_url, url)
    return dt


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--backends", default="sqlite,postgresql,asedb")
    p.add_argument("--pg-url", default=PG_DEFAULT)
    p.add_argument("--ase-n", type=int, default=20_000, help="frames written to ase.db")
    p.add_argument("--atoms-n", type=int, default=20_000,
                   help="frames for the Registry.ingest(list_of_atoms) path (0: skip)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    t0 = time.perf_counter()
    batch = synthetic_batch(args.n, args.seed)
    n_labels = args.n + int(batch.labels[LEVEL_B].present.sum())
    print(f"built {args.n} molecules ({int(batch.offsets[-1])} atoms, {n_labels} labels) "
          f"in {time.perf_counter() - t0:.1f} s; repeat={args.repeat}, "
          f"batch_size={args.batch_size}")
    rates: dict[str, list[float]] = {}

    def record(name, n, dt):
        rates.setdefault(name, []).append(n / dt)
        print(f"  {name:<22} {n:>8} structures in {dt:7.2f} s = {n / dt:>9,.0f} /s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        atoms = None
        if args.atoms_n or "asedb" in backends:
            atoms = batch_to_atoms(batch, max(args.ase_n, args.atoms_n))
        for _ in range(args.repeat):
            if "postgresql" in backends:
                url = fresh_pg(args.pg_url)
                try:
                    dt, summary = time_registry(url, batch, args.batch_size)
                    assert summary["structures_new"] == args.n, summary
                    assert summary["labels_new"] == n_labels, summary
                    record("postgresql", args.n, dt)
                finally:
                    drop_pg(args.pg_url, url)
                record("raw-copy (postgresql)", args.n, time_raw_copy(args.pg_url, batch))
            if "sqlite" in backends:
                url = fresh_sqlite(tmp)
                dt, summary = time_registry(url, batch, args.batch_size)
                assert summary["structures_new"] == args.n, summary
                assert summary["labels_new"] == n_labels, summary
                record("sqlite", args.n, dt)
            if "asedb" in backends:
                record("ase.db", args.ase_n, time_asedb(atoms[: args.ase_n], tmp))
            if args.atoms_n:
                sub = atoms[: args.atoms_n]
                for be in backends:
                    if be == "asedb":
                        continue
                    url = fresh_pg(args.pg_url) if be == "postgresql" else fresh_sqlite(tmp)
                    try:
                        dt, _ = time_registry(url, sub, args.batch_size, level=LEVEL_A)
                        record(f"{be} (Atoms path)", len(sub), dt)
                    finally:
                        if be == "postgresql":
                            drop_pg(args.pg_url, url)

    med = {k: statistics.median(v) for k, v in rates.items()}
    print("\nmedian structures/s (min-max over runs):")
    for k, v in rates.items():
        print(f"  {k:<22} {med[k]:>9,.0f}   ({min(v):,.0f}-{max(v):,.0f})")
    if "ase.db" in med:
        print("\nratios to ase.db:")
        for k, v in med.items():
            if k != "ase.db":
                print(f"  {k:<22} {v / med['ase.db']:>7.1f} x")
    if "postgresql" in med:
        print(f"\npostgresql / raw COPY: {med['postgresql'] / med['raw-copy (postgresql)']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
