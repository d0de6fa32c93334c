"""Scale benchmark: the same filters, ingest and curation at 1 M and 10 M structures.

    python benchmarks/scale.py [--sizes 1000000,10000000] [--pg-url URL] [--reuse]
        [--repeat 15] [--no-curation] [--no-ingest]

Each size gets its own PostgreSQL database (``nnp_scale_<n>``), loaded with the registry's
own ingest from the generator of ``benchmarks/query.py`` in chunks of 100,000 whose seeds
follow the chunk's position, so the 1 M database holds exactly the first million structures
of the 10 M one. Both also get the same extra batch of 2,000 selenium compounds, 500 of them
labelled at a third level: the filters on those have the same answer at every size, so their
latency shows whether cost follows the answer or the table. ``--reuse`` keeps a database
that already holds its structures (loading 10 M takes ~6 minutes here).

Printed per size and as the 10 M / 1 M ratio:

* each filter of :data:`FILTERS`: ``Registry.count`` and ``Registry.query_ids``, median of
  ``--repeat`` after 3 warm-ups (after VACUUM ANALYZE, as autovacuum leaves a table);
* ingest (last; the batches stay): ``--ingest-batches`` + 1 new 100,000-structure batches,
  each into that database and then the same batch into an empty one (made before the first
  batch, since creating and dropping databases forces a checkpoint; it holds only the run's
  earlier batches). The first pair is reported apart: after a checkpoint (or a server
  restart) the first change to each index page writes the whole page to the WAL and reads
  it back from the OS. The ratio to the empty store is over the other pairs (structures
  over seconds, summed), the steady state of a long ingest.
  The server's memory and checkpoint settings are printed beside it: they decide the figure
  (docs/scaling.md);
* (unless ``--no-curation``) a dataset version of the first 1,000,000 structures (create and
  ``materialize`` without cache) and near-duplicate search over the same 1,000,000;
* table and index sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import median_seconds as median  # noqa: E402
from query import HIGH, LOW, PG_DEFAULT, pg_database, synthetic  # noqa: E402

from registry.chem.frames import FrameBatch, LabelColumns  # noqa: E402

CHUNK = 100_000
# what decides whether randomly written index pages stay in memory between checkpoints
SERVER_SETTINGS = ("shared_buffers", "max_wal_size", "checkpoint_timeout", "wal_compression")
RARE_LEVEL = "wb97x/def2-tzvp"
FILTERS = [
    ("element+size+level", f'elements HAS ALL "C","N" AND nsites<=12 AND _nnp_levels HAS "{HIGH}"',
     None),
    ("formula equality", 'chemical_formula_reduced = "C3H2N2O"', None),
    ("rare element", 'elements HAS "Se"', None),
    ("rare element+size", 'elements HAS "Se" AND nsites<=6', None),
    ("level only (rare)", f'_nnp_levels HAS "{RARE_LEVEL}"', None),
    ("energy/atom range at a level", "_nnp_energy_per_atom < -200", RARE_LEVEL),
    ("element+level (rare)", f'elements HAS "C" AND _nnp_levels HAS "{RARE_LEVEL}"', None),
]


def rare_batch(n: int = 2000, seed: int = 7) -> FrameBatch:
    """``n`` small molecules of H, C and Se (always Se), labelled at ``LOW``; a quarter of
    them also at ``RARE_LEVEL``. The same batch goes into every database."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(3, 13, size=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    numbers = rng.choice([1, 6, 34], size=total, p=[0.5, 0.3, 0.2])
    numbers[offsets[:-1]] = 34
    positions = rng.random((total, 3)) * np.repeat(1.4 * np.cbrt(counts), counts)[:, None]
    low = LabelColumns(present=np.ones(n, dtype=bool), energy=rng.normal(-1e4, 1e3, n),
                       forces=rng.normal(0, 1, (total, 3)))
    rare = LabelColumns(present=np.arange(n) % 4 == 0, energy=rng.normal(-2000, 500, n) * counts)
    return FrameBatch(numbers=numbers, positions=positions, offsets=offsets,
                      cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), dtype=bool),
                      charge=np.zeros(n, dtype=np.int64), multiplicity=np.ones(n, dtype=np.int64),
                      labels={LOW: low, RARE_LEVEL: rare}, sources=["synthetic-se"] * n)


def load(reg, n: int) -> None:
    """Fill ``reg`` up to ``n`` generated structures (chunk seeds by position) + the rare batch."""
    have = reg.count('_nnp_source = "synthetic"')
    t0 = time.perf_counter()
    start = have - have % CHUNK
    for lo in range(start, n, CHUNK):
        m = min(CHUNK, n - lo)
        reg.ingest_batch(synthetic(m, seed=lo // CHUNK), batch_size=25_000)
        print(f"  loaded {lo + m:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not reg.count('elements HAS "Se"'):
        reg.ingest_batch(rare_batch())


def ingest_rate(reg, seed: int) -> float:
    """Structures per second of one new ``CHUNK`` batch (generated before timing)."""
    batch = synthetic(CHUNK, seed=seed)
    t0 = time.perf_counter()
    out = reg.ingest_batch(batch, batch_size=25_000)
    secs = time.perf_counter() - t0
    assert out.structures_new == CHUNK, out
    return CHUNK / secs


def sizes(reg) -> dict[str, int]:
    from sqlalchemy import text

    sql = text("SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
               "('structures', 'labels', 'compositions', 'composition_elements', "
               "'element_sets', 'dataset_members')")
    with reg.engine.connect() as c:
        out = dict(c.execute(sql).all())
        out["database"] = c.execute(text("SELECT pg_database_size(current_database())")).scalar()
    return out


def curation(reg) -> dict[str, float]:
    out = {}
    t0 = time.perf_counter()
    v = reg.create_dataset_version("scale-1m", levels=[LOW], filter="id <= 1000000")
    out["dataset_create_s"] = time.perf_counter() - t0
    out["dataset_n"] = v["n_structures"]
    t0 = time.perf_counter()
    reg.materialize(f"scale-1m:{v['version']}", cache=False)
    out["materialize_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = reg.near_duplicates(tolerance=0.01, filter="id <= 1000000")
    out["dedup_s"] = time.perf_counter() - t0
    out["dedup_clusters"] = len(found["clusters"]) if isinstance(found, dict) else len(found)
    return out


def run_size(admin_url: str, n: int, reuse: bool, repeat: int, do_curation: bool,
             do_ingest: bool = True, ingest_batches: int = 3) -> dict:
    from ingest import steady_state

    from registry.core import Registry
    from registry.store.engine import upgrade

    url, fresh = pg_database(admin_url, reuse, f"nnp_scale_{n}")
    upgrade(url)
    out: dict = {"n": n}
    with Registry(url) as reg:
        load(reg, n)
        steady_state(reg)
        out["structures"] = reg.count()
        for name, filt, level in FILTERS:
            kw = {"level": level} if level else {}
            out[name] = {"matches": reg.count(filt, **kw),
                         "count_s": median(lambda f=filt, k=kw: reg.count(f, **k), repeat),
                         "ids_s": median(lambda f=filt, k=kw: reg.query_ids(f, **k), repeat)}
            print(f"  {name}: {out[name]['matches']:,} matches, count "
                  f"{out[name]['count_s'] * 1e3:.1f} ms, ids {out[name]['ids_s'] * 1e3:.1f} ms",
                  flush=True)
        if do_curation:
            out["curation"] = curation(reg)
        out["sizes"] = sizes(reg)
        if not do_ingest:
            return out
        # last, so the figures above are on exactly the loaded structures (the batches
        # stay: a later --reuse run works on more)
        out.update(ingest_pairs(reg, admin_url, ingest_batches))
    return out


def ingest_pairs(reg, admin_url: str, batches: int) -> dict:
    """Rates of ``batches`` + 1 new batches into ``reg`` and of the same batches into an
    empty database; the first pair apart (see the module docstring)."""
    from sqlalchemy import text

    from registry.core import Registry
    from registry.store.engine import upgrade

    url, _ = pg_database(admin_url, False, "nnp_scale_empty")
    upgrade(url)
    with reg.engine.connect() as c:
        settings = {k: c.execute(text(f"SHOW {k}")).scalar() for k in SERVER_SETTINGS}
    print("  server: " + ", ".join(f"{k} {v}" for k, v in settings.items()), flush=True)
    first_seed = 10_000 + reg.count() // CHUNK
    pairs = []
    with Registry(url) as empty:
        for k in range(batches + 1):
            pairs.append((ingest_rate(reg, first_seed + k), ingest_rate(empty, first_seed + k)))
            print(f"  ingest batch {k + 1}: {pairs[-1][0]:,.0f} structures/s, empty store "
                  f"{pairs[-1][1]:,.0f} ({pairs[-1][0] / pairs[-1][1]:.2f})", flush=True)
    steady = pairs[1:] or pairs
    rate, empty_rate = (len(steady) / sum(1 / p[i] for p in steady) for i in (0, 1))
    return {"server": settings, "ingest_pairs": pairs, "ingest_rate": rate,
            "empty_rate": empty_rate, "ingest_ratio_to_empty": rate / empty_rate,
            "first_ratio_to_empty": pairs[0][0] / pairs[0][1]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--pg-url", default=PG_DEFAULT)
    ap.add_argument("--reuse", action="store_true", help="keep already loaded databases")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-curation", action="store_true")
    ap.add_argument("--no-ingest", action="store_true",
                    help="skip the ingest-rate measurement (which adds its batches)")
    ap.add_argument("--ingest-batches", type=int, default=3,
                    help="timed batches after the first pair (each adds 100,000 structures)")
    args = ap.parse_args(argv)
    tempfile.tempdir = tempfile.mkdtemp(prefix="nnp-scale-")

    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"\n{n:,} structures", flush=True)
        results.append(run_size(args.pg_url, n, args.reuse, args.repeat,
                                not args.no_curation, not args.no_ingest,
                                args.ingest_batches))
    print_table(results)


def print_table(results: list[dict]) -> None:
    head = "".join(f"{r['structures']:>16,}" for r in results)
    ratio = len(results) > 1
    print(f"\n{'':34}{head}" + (f"{'ratio last/first':>18}" if ratio else ""))

    def row(label, values, fmt, r=True):
        cells = "".join(f"{fmt(v):>16}" for v in values)
        tail = f"{values[-1] / values[0]:>17.2f}x" if ratio and r else ""
        print(f"{label:34}{cells}{tail}")

    for name, _, _ in FILTERS:
        row(f"{name} (matches)", [r[name]["matches"] for r in results], "{:,}".format, False)
        row("  count ms", [r[name]["count_s"] * 1e3 for r in results], "{:.1f}".format)
        row("  ids ms", [r[name]["ids_s"] * 1e3 for r in results], "{:.1f}".format)
    if all("ingest_rate" in r for r in results):
        row("ingest structures/s", [r["ingest_rate"] for r in results], "{:,.0f}".format)
        row("  same batches, empty store", [r["empty_rate"] for r in results],
            "{:,.0f}".format, False)
        row("  ratio to the empty store", [r["ingest_ratio_to_empty"] for r in results],
            "{:.2f}".format, False)
        row("  first batch's ratio", [r["first_ratio_to_empty"] for r in results],
            "{:.2f}".format, False)
    if all("curation" in r for r in results):
        for key in ("dataset_create_s", "materialize_s", "dedup_s"):
            row(key.replace("_s", " s"), [r["curation"][key] for r in results],
                "{:.1f}".format)
    for key in ("structures", "labels", "compositions", "element_sets", "database"):
        row(f"size {key} MB", [r["sizes"].get(key, 0) / 2**20 for r in results],
            "{:,.0f}".format)


if __name__ == "__main__":
    main()
