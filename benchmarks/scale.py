"""Scale benchmark: the same filters, ingest and curation at 1 M and 10 M structures.

    python benchmarks/scale.py [--sizes 1000000,10000000] [--pg-url URL] [--reuse]
        [--repeat 15] [--no-curation] [--no-ingest] [--ingest-batches 3]
        [--ingest-sizes 10000000]

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
* ingest (last; the batches stay; ``--ingest-sizes`` picks the sizes): ``--ingest-batches``
  + 1 new 100,000-structure batches, each into that database, then into an empty database
  of its own, then into a small store that holds only the run's earlier batches (all
  copied from one migrated template before the first batch, since creating and dropping
  databases forces a checkpoint; dropped after the last). The empty store also creates
  every composition of the batch, which the large store mostly has; the small store
  has most of them after its first batch, so its ratio isolates what grows with the
  store. The first batch is reported apart: after a checkpoint (or a server restart) the
  first change to each index page writes the whole page to the WAL and reads it back
  from the OS. Ratios are over the other batches (structures over seconds, summed) and
  over the last half: the steady state of a long ingest.
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
        out.update(ingest_comparison(reg, admin_url, ingest_batches))
    return out


def admin_connection(admin_url: str):
    """An autocommit psycopg connection to the server's admin database (CREATE / DROP
    DATABASE cannot run in a transaction)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    return psycopg.connect(url, autocommit=True)


def empty_stores(admin_url: str, k: int) -> list[str]:
    """URLs of ``k`` empty, migrated databases (``nnp_scale_empty_<i>``), copies of one
    migrated template: made before any timed batch, since creating a database forces a
    checkpoint."""
    from sqlalchemy.engine import make_url

    from registry.store.engine import upgrade

    template, _ = pg_database(admin_url, False, "nnp_scale_empty")
    upgrade(template)
    urls = []
    with admin_connection(admin_url) as conn:
        for i in range(k):
            name = f"nnp_scale_empty_{i}"  # names from this script
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "nnp_scale_empty"')
            urls.append(make_url(template).set(database=name).render_as_string(False))
    return urls


def drop_empty_stores(admin_url: str, k: int) -> None:
    with admin_connection(admin_url) as conn:
        for name in [f"nnp_scale_empty_{i}" for i in range(k)] + ["nnp_scale_empty"]:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ingest_comparison(reg, admin_url: str, batches: int) -> dict:
    """Rates of ``batches`` + 1 new batches into ``reg``, of each batch into an empty
    database of its own, and into a small store that holds the run's earlier batches only;
    the first batch apart (see the module docstring)."""
    from sqlalchemy import text

    from registry.core import Registry

    urls = empty_stores(admin_url, batches + 2)  # the last one is the small store
    with reg.engine.connect() as c:
        settings = {k: c.execute(text(f"SHOW {k}")).scalar() for k in SERVER_SETTINGS}
    print("  server: " + ", ".join(f"{k} {v}" for k, v in settings.items()), flush=True)
    first_seed = 10_000 + reg.count() // CHUNK
    rates = []  # (this store, empty store, small store) per batch
    with Registry(urls[-1]) as small:
        for k, url in enumerate(urls[:-1]):
            with Registry(url) as empty:
                rates.append((ingest_rate(reg, first_seed + k),
                              ingest_rate(empty, first_seed + k),
                              ingest_rate(small, first_seed + k)))
            r = rates[-1]
            print(f"  ingest batch {k + 1}: {r[0]:,.0f} structures/s; empty store {r[1]:,.0f}"
                  f" ({r[0] / r[1]:.2f}); small store {r[2]:,.0f} ({r[0] / r[2]:.2f})",
                  flush=True)
    drop_empty_stores(admin_url, len(urls))  # after the timing: dropping forces a checkpoint

    def rate(ps, i):  # structures over seconds, summed
        return len(ps) / sum(1 / p[i] for p in ps)

    steady, half = rates[1:] or rates, rates[len(rates) // 2:]
    return {"server": settings, "ingest_rates": rates, "ingest_rate": rate(steady, 0),
            "empty_rate": rate(steady, 1), "small_rate": rate(steady, 2),
            "ingest_ratio_to_empty": rate(steady, 0) / rate(steady, 1),
            "ingest_ratio_to_small": rate(steady, 0) / rate(steady, 2),
            "first_ratio_to_empty": rates[0][0] / rates[0][1],
            "last_half_ratio_to_empty": rate(half, 0) / rate(half, 1),
            "last_half_ratio_to_small": rate(half, 0) / rate(half, 2)}


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
                    help="timed batches after the first one (each adds 100,000 structures)")
    ap.add_argument("--ingest-sizes", default=None,
                    help="sizes whose ingest rate is measured (default: all of --sizes)")
    args = ap.parse_args(argv)
    tempfile.tempdir = tempfile.mkdtemp(prefix="nnp-scale-")

    targets = [int(x) for x in args.sizes.split(",")]
    ingest_at = {int(x) for x in (args.ingest_sizes or args.sizes).split(",")}
    results = []
    for n in targets:
        print(f"\n{n:,} structures", flush=True)
        results.append(run_size(args.pg_url, n, args.reuse, args.repeat,
                                not args.no_curation, not args.no_ingest and n in ingest_at,
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
    timed = [r for r in results if "ingest_rate" in r]
    for r in timed:  # an ingest row per measured size (sizes may be measured alone)
        print(f"ingest at {r['structures']:,}: {r['ingest_rate']:,.0f} structures/s; empty "
              f"store {r['empty_rate']:,.0f}, ratio {r['ingest_ratio_to_empty']:.2f} (first "
              f"batch {r['first_ratio_to_empty']:.2f}, last half "
              f"{r['last_half_ratio_to_empty']:.2f}); small store {r['small_rate']:,.0f}, "
              f"ratio {r['ingest_ratio_to_small']:.2f} (last half "
              f"{r['last_half_ratio_to_small']:.2f})")
    if all("curation" in r for r in results):
        for key in ("dataset_create_s", "materialize_s", "dedup_s"):
            row(key.replace("_s", " s"), [r["curation"][key] for r in results],
                "{:.1f}".format)
    for key in ("structures", "labels", "compositions", "element_sets", "database"):
        row(f"size {key} MB", [r["sizes"].get(key, 0) / 2**20 for r in results],
            "{:,.0f}".format)


if __name__ == "__main__":
    main()
