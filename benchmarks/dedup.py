"""Near-duplicate search over QM9 through the CLI, cold processes, in one run:

- with ``--peer DIR`` (a checkout of an earlier revision, e.g. ``git worktree add DIR REV``):
  that revision's ``nnp dedup``, on its own copy of the registry built by its own code,
- ``nnp dedup --no-prefilter`` (every candidate pair aligned, one process),
- ``nnp dedup`` (lower-bound rejection, one process),
- ``nnp dedup --workers N`` (lower-bound rejection, pairs confirmed as Dask tasks).

All must report the same clusters (compared by structure hashes); prints seconds and the
speed-up over the first. The QM9 registries (SQLite, from the ``qm9pack`` package of the
``bench`` extra) are built once under ``--dir`` and reused.

    python benchmarks/dedup.py [--limit N] [--tolerance 0.01] [--workers 2] [--peer DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def build(url: str, limit: int | None) -> int:
    import qm9data

    from registry.core import Registry
    from registry.io.atoms import atoms_to_batch
    from registry.store.engine import upgrade

    upgrade(url)
    n, chunk = 0, []
    with Registry(url) as reg:
        for a in qm9data.atoms(limit):
            chunk.append(a)
            if len(chunk) == 20000:
                reg.ingest_batch(atoms_to_batch(chunk, "b3lyp/6-31g(2df,p)", source="qm9")[0])
                n += len(chunk)
                chunk = []
        if chunk:
            reg.ingest_batch(atoms_to_batch(chunk, "b3lyp/6-31g(2df,p)", source="qm9")[0])
            n += len(chunk)
    return n


def _cli(code_dir: str, args: list[str], env: dict) -> list[str]:
    """A cold ``nnp`` process running the code in ``code_dir`` (first on ``sys.path``)."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from pipelines.cli import main; "
              "sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-c", script, code_dir, *args]


def timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd[3:])} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0, json.loads(out.stdout)


def ensure_db(path: Path, code_dir: str, limit: int | None) -> str:
    """The QM9 registry at ``path``, built (once) by the code in ``code_dir``."""
    url = f"sqlite:///{path}"
    if not path.exists():
        here = str(Path(__file__).resolve().parent)
        script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import dedup; "
                  "print(dedup.build(sys.argv[3], None if sys.argv[4] == '-' else "
                  "int(sys.argv[4])))")
        t0 = time.perf_counter()
        n = subprocess.run([sys.executable, "-c", script, code_dir, here, url,
                            str(limit) if limit else "-"], cwd=code_dir, check=True,
                           capture_output=True, text=True).stdout.strip()
        print(f"built {path}: {n} molecules in {time.perf_counter() - t0:.1f} s")
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N molecules (default all)")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peer", default=None, help="checkout of an earlier revision to compare")
    ap.add_argument("--dir", default="/tmp/nnp-bench", help="where the registries are kept")
    a = ap.parse_args()
    root = str(Path(__file__).resolve().parent.parent)
    tag = a.limit or "all"
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "NNP_DASK_SCHEDULER"}
    base = ["dedup", "--tolerance", str(a.tolerance), "--json"]
    runs = []
    if a.peer:
        peer = str(Path(a.peer).resolve())
        url = ensure_db(Path(a.dir) / f"qm9-{tag}-peer.db", peer, a.limit)
        runs.append((f"peer {Path(peer).name}", _cli(peer, base, env), url, peer))
    url = ensure_db(Path(a.dir) / f"qm9-{tag}.db", root, a.limit)
    runs += [("no lower bound, 1 process", _cli(root, [*base, "--no-prefilter"], env), url, root),
             ("lower bound, 1 process", _cli(root, base, env), url, root),
             (f"lower bound, {a.workers} Dask workers",
              _cli(root, [*base, "--workers", str(a.workers)], env), url, root)]
    results = []
    for name, cmd, db_url, cwd in runs:
        seconds, out = timed(cmd, {**env, "NNP_DATABASE_URL": db_url}, cwd)
        results.append((name, seconds, out))
        print(f"{name:34s} {seconds:8.1f} s  candidates {out['candidate_pairs']:>8}  "
              f"pre-filtered {out.get('prefiltered_pairs', 0):>8}  duplicate pairs "
              f"{out['duplicate_pairs']:>5}  clusters {len(out['clusters'])}", flush=True)
    found = {json.dumps(sorted(sorted(c["hashes"]) for c in r[2]["clusters"]))
             for r in results}
    print(f"same clusters in all runs: {len(found) == 1}")
    t_base = results[0][1]
    for name, seconds, _ in results[1:]:
        print(f"speed-up of '{name}' over '{results[0][0]}': {t_base / seconds:.1f}x")


if __name__ == "__main__":
    main()
