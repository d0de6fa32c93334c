"""Ingest benchmark: synthetic ANI-like molecules into PostgreSQL, SQLite and ase.db; with
``--files``, real files end to end through ``nnp ingest``.

    python benchmarks/ingest.py --n 200000 [--backends sqlite,postgresql,asedb]
        [--pg-url URL] [--ase-n 20000] [--atoms-n 20000] [--repeat 3] [--batch-size 20000]
    python benchmarks/ingest.py --files [--groups 2000] [--xyz-n 130831] [--repeat 3]
        [--rss-n 200000,1000000] [--rss-batch 20000,50000] [--backends sqlite,postgresql]

``--files``: an ANI-style HDF5 file (``--groups`` molecule groups x 100 conformers of 5-30
H/C/N/O atoms, energies + forces) is ingested by ``nnp ingest`` in a subprocess (wall time,
start-up and imports included) and, alternating with it, the same frames already in memory
by ``Registry.ingest_batch``: the ratio of the two rates is the figure. Each of those timed
ingests starts after ``os.sync()``, so the disk is not still writing the previous one's
database. A QM9-like extxyz
file (``--xyz-n`` molecules of 3-29 atoms, 16 properties per frame, Mulliken-like charges) is
timed through ``nnp ingest`` against ``ase.io.read(path, ":")`` alone (a subprocess; import
excluded). Peak RSS of ``nnp ingest`` (the child's ``ru_maxrss``) is reported for HDF5 files
of each ``--rss-n`` conformers at each ``--rss-batch``, on each backend (SQLite's page cache,
up to 256 MiB, is in the client's figure; PostgreSQL's is in the server).

Each molecule has 5-30 atoms of H, C, N, O, an energy and forces at one level and, for 10 %
of them, a second level. Every timed ingest goes into a fresh database (schema created
before the clock starts); labels are included. Rates are structures per second, medians over
``--repeat`` runs. ``raw-copy`` is a binary COPY of the same bytes (hashes, numbers,
positions, energies, forces) into bare tables: the upper bound for PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


# ----------------------------------------------------------------------- real files
def write_ani_h5(path: str, groups: int, conformers: int = 100, seed: int = 0) -> int:
    """An ANI-style HDF5 file: ``groups`` molecules (5-30 H/C/N/O atoms) x ``conformers``,
    species as bytes, float64 coordinates, energies (eV) and forces; returns the frames."""
    import h5py

    rng = np.random.default_rng(seed)
    symbols = np.array([b"H", b"C", b"N", b"O"])
    with h5py.File(path, "w") as fh:
        for g in range(groups):
            n = int(rng.integers(5, 31))
            grp = fh.create_group(f"mol{g:06d}")
            grp["species"] = symbols[rng.choice(4, size=n, p=[0.5, 0.3, 0.1, 0.1])]
            base = rng.random((n, 3)) * 1.4 * np.cbrt(n)
            grp["coordinates"] = base + rng.normal(scale=0.05, size=(conformers, n, 3))
            grp["energies"] = rng.normal(-1e4, 1e3, conformers)
            grp["forces"] = rng.normal(0, 1, (conformers, n, 3))
    return groups * conformers


QM9_KEYS = ["A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U",
            "H", "G", "Cv"]


def write_qm9_like(path: str, n: int, seed: int = 0) -> int:
    """A QM9-like extxyz file: ``n`` molecules of 3-29 H/C/N/O/F atoms with an energy, 15
    more properties and an index per frame, per-atom charges; ~1.1 kB per molecule."""
    rng = np.random.default_rng(seed)
    symbols = np.array(["H", "C", "N", "O", "F"])
    with open(path, "w") as fh:
        for i in range(n):
            k = int(rng.integers(3, 30))
            z = symbols[rng.choice(5, size=k, p=[0.5, 0.33, 0.07, 0.08, 0.02])]
            pos = rng.normal(scale=1.5, size=(k, 3))
            q = rng.normal(scale=0.2, size=k)
            vals = rng.normal(size=len(QM9_KEYS))
            props = " ".join(f"{key}={v:.6f}" for key, v in zip(QM9_KEYS, vals, strict=True))
            lines = [str(k), f"Properties=species:S:1:pos:R:3:charges:R:1 gdb_idx={i + 1} "
                             f'energy={-400 + 10 * vals[0]:.8f} {props} pbc="F F F"']
            lines += [f"{s} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f} {c:.6f}"
                      for s, p, c in zip(z, pos, q, strict=True)]
            fh.write("\n".join(lines) + "\n")
    return n


def nnp_command() -> list[str]:
    script = Path(sys.executable).with_name("nnp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def run_cli(url: str, args: list[str]) -> tuple[float, int, float, dict]:
    """``nnp ARGS --json`` in a fresh process: (wall seconds, peak RSS bytes, CPU seconds,
    summary). Peak RSS and CPU come from ``RUSAGE_CHILDREN``, which keeps the largest RSS of
    all children so far: call it in a process of its own (:func:`measured_cli`)."""
    import resource

    env = {**os.environ, "NNP_DATABASE_URL": url}
    t0 = time.perf_counter()
    proc = subprocess.Popen([*nnp_command(), *args, "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()  # reaps the child, so its rusage is counted
    dt = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"nnp {' '.join(args)} failed: {err.decode()[-2000:]}")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dt, ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime, json.loads(out)


def measured_cli(url: str, args: list[str]) -> tuple[float, int, float, dict]:
    """:func:`run_cli` in a helper process, so the rusage figures are this command's alone."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from ingest import run_cli; "
            "print(json.dumps(run_cli(sys.argv[2], json.loads(sys.argv[3]))))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), url,
                          json.dumps(args)], capture_output=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr.decode()[-2000:])
    return tuple(json.loads(out.stdout))


def cpu_seconds() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def fresh(backend: str, pg_url: str, tmp: str) -> str:
    return fresh_pg(pg_url) if backend == "postgresql" else fresh_sqlite(tmp)


def release(backend: str, pg_url: str, url: str) -> None:
    if backend == "postgresql":
        drop_pg(pg_url, url)
    else:
        os.unlink(url.removeprefix("sqlite:///"))


def cli_ingest(be: str, pg_url: str, tmp: str, argv: list[str]):
    """``nnp ingest ARGV`` into a fresh database of backend ``be``: (wall s, peak RSS bytes,
    CPU s, summary), the database dropped afterwards."""
    url = fresh(be, pg_url, tmp)
    os.sync()  # no write-back of an earlier run's files competes with this one
    try:
        return measured_cli(url, ["ingest", *argv])
    finally:
        release(be, pg_url, url)


def files_benchmark(args) -> int:
    from registry.io.readers import ReadOptions, read_file

    backends = [b for b in args.backends.split(",") if b in ("sqlite", "postgresql")]
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        h5 = f"{tmp}/ani.h5"
        t0 = time.perf_counter()
        n = write_ani_h5(h5, args.groups)
        print(f"ANI HDF5: {args.groups} groups x 100 = {n} conformers, "
              f"{os.path.getsize(h5) / 1e6:.0f} MB, written in {time.perf_counter() - t0:.0f} s;"
              f" repeat={args.repeat}, batch_size={args.batch_size}", flush=True)
        (batch,), _ = read_file(h5, ReadOptions(LEVEL_A))
        for _ in range(args.repeat):
            for be in backends:
                url = fresh(be, args.pg_url, tmp)
                os.sync()  # as before each `nnp ingest` (cli_ingest)
                try:
                    cpu = cpu_seconds()
                    dt, summary = time_registry(url, batch, args.batch_size)
                    cpu = cpu_seconds() - cpu
                    assert summary["structures_new"] == n, summary
                finally:
                    release(be, args.pg_url, url)
                rates.setdefault(f"{be} in memory", []).append(n / dt)
                wall, rss, cli_cpu, summary = cli_ingest(
                    be, args.pg_url, tmp,
                    [h5, "--level", LEVEL_A, "--batch-size", str(args.batch_size)])
                assert summary["structures_new"] == summary["labels_new"] == n, summary
                rates.setdefault(f"{be} nnp ingest", []).append(n / wall)
                rates.setdefault(f"{be} pair ratio", []).append(dt / wall)
                print(f"  {be:<10} in memory {n / dt:>8,.0f} /s ({dt:5.2f} s, {cpu:5.2f} s "
                      f"CPU)   nnp ingest {n / wall:>8,.0f} /s ({wall:5.2f} s, {cli_cpu:5.2f} s"
                      f" CPU, peak RSS {rss / 2**20:,.0f} MiB)   ratio {dt / wall:.2f}",
                      flush=True)
        del batch
        # The machine's speed drifts during a run: each nnp ingest is compared with the
        # in-memory ingest just before it, and the median of those ratios is the figure.
        print("\nHDF5, median structures/s (min-max); ratio nnp ingest / in memory:")
        for be in backends:
            mem, cli = (statistics.median(rates[f"{be} {k}"]) for k in ("in memory",
                                                                        "nnp ingest"))
            pairs = rates[f"{be} pair ratio"]
            print(f"  {be:<10} in memory {mem:>8,.0f} ({min(rates[f'{be} in memory']):,.0f}-"
                  f"{max(rates[f'{be} in memory']):,.0f})   nnp ingest {cli:>8,.0f} "
                  f"({min(rates[f'{be} nnp ingest']):,.0f}-"
                  f"{max(rates[f'{be} nnp ingest']):,.0f})   ratio: median of pairs "
                  f"{statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f}; "
                  f"{sum(r >= 0.7 for r in pairs)} of {len(pairs)} >= 0.7), of the medians "
                  f"{cli / mem:.2f} (target >= 0.7)")
        os.unlink(h5)

        if args.xyz_n:
            xyz = f"{tmp}/qm9-like.xyz"
            t0 = time.perf_counter()
            write_qm9_like(xyz, args.xyz_n)
            print(f"\nQM9-like extxyz: {args.xyz_n} molecules, "
                  f"{os.path.getsize(xyz) / 1e6:.0f} MB, written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            code = ("import sys, time, ase.io; t = time.perf_counter(); c = time.process_time();"
                    " n = len(ase.io.read(sys.argv[1], ':')); "
                    "print(n, time.perf_counter() - t, time.process_time() - c)")
            out = subprocess.run([sys.executable, "-c", code, xyz], capture_output=True,
                                 check=True, text=True).stdout.split()
            assert int(out[0]) == args.xyz_n
            ase_s, ase_cpu = float(out[1]), float(out[2])
            print(f"  ase.io.read alone          {ase_s:7.2f} s; {ase_cpu:.2f} s CPU", flush=True)
            for be in backends:
                wall, rss, cli_cpu, summary = cli_ingest(
                    be, args.pg_url, tmp,
                    [xyz, "--level", "b3lyp", "--batch-size", str(args.batch_size)])
                assert summary["structures_new"] == args.xyz_n, summary
                print(f"  nnp ingest ({be:<10})    {wall:7.2f} s  = {wall / ase_s:.2f} of "
                      f"ase.io.read (target < 1); {cli_cpu:.2f} s CPU = {cli_cpu / ase_cpu:.2f}"
                      f" of its CPU, peak RSS {rss / 2**20:,.0f} MiB", flush=True)
            os.unlink(xyz)

        if args.rss_n:
            print("\npeak RSS of nnp ingest, MiB:")
            for size in [int(x) for x in args.rss_n.split(",")]:
                h5 = f"{tmp}/rss.h5"
                write_ani_h5(h5, size // 100, seed=1)
                for be, bs in [(be, int(x)) for be in backends
                               for x in args.rss_batch.split(",")]:
                    wall, rss, _, summary = cli_ingest(
                        be, args.pg_url, tmp, [h5, "--level", LEVEL_A, "--batch-size", str(bs)])
                    assert summary["structures_new"] == size, summary
                    print(f"  {be:<10} {size:>9,} structures, --batch-size {bs:>6,}: "
                          f"{rss / 2**20:7,.0f} MiB  ({wall:6.1f} s, "
                          f"{os.path.getsize(h5) / 2**20:,.0f} MiB file)", flush=True)
                os.unlink(h5)
    return 0


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
    p.add_argument("--files", action="store_true",
                   help="real files end to end through nnp ingest (see the module doc)")
    p.add_argument("--groups", type=int, default=2000, help="HDF5 molecule groups (x 100)")
    p.add_argument("--xyz-n", type=int, default=130_831, help="QM9-like molecules (0: skip)")
    p.add_argument("--rss-n", default="200000,1000000", help="HDF5 sizes for peak RSS")
    p.add_argument("--rss-batch", default="20000,50000", help="batch sizes for peak RSS")
    p.add_argument("--tmp", default=None, help="folder for the generated files")
    args = p.parse_args(argv)
    if args.files:
        return files_benchmark(args)
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
