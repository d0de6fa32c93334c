"""Model registry benchmark, with MLflow's model registry as the peer in the same run.

    python benchmarks/models.py [--versions 10000] [--mlflow-versions 2000] [--pg-url URL]
        [--repeat 200]

Registry (embedded SQLite by default, or ``--pg-url``; artifacts in a local directory):
  * register: ``--versions`` versions of one model, each a distinct ~1 KB safetensors member
    written to the artifact store (fsync'd) and its rows + provenance run in one transaction;
    then one 1 MB version, aliased ``production``;
  * warm pull of ``bench@production`` in this process: resolve alias, read + sha256-verify the
    1 MB file, decode to numpy arrays (median over ``--repeat``);
  * list versions (first page of 50, newest first) and alias lookup (median);
  * cold ``nnp models pull bench@production -o DIR`` in a fresh process (median of 5, wall).
MLflow (SQLite backend store + local file artifact store, same 1 MB safetensors file):
  * register: ``log_artifact`` in a run + ``create_model_version`` (the full path) for 100
    versions; the rest up to ``--mlflow-versions`` with ``create_model_version`` alone
    (pointing at one logged artifact) to make setting up many versions affordable;
  * warm pull: ``download_artifacts("models:/bench@production")`` + safetensors to numpy,
    list (``search_model_versions``, 50) and alias lookup (``get_model_version_by_alias``),
    each measured at 200 versions and at ``--mlflow-versions``; cold pull in a fresh process.
Ratios are MLflow time / registry time (higher = registry faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingest import drop_pg, fresh_pg, median_seconds  # noqa: E402  (benchmarks/ingest.py)

ONE_MB = 1 << 20


def median_ms(fn, repeat: int, warmup: int = 3) -> float:
    return median_seconds(fn, repeat, warmup) * 1e3


def state_1mb() -> dict:
    rng = np.random.default_rng(1)
    return {"w0": rng.normal(size=(512, 256)).astype(np.float32),   # 512 KiB
            "w1": rng.normal(size=(256, 512)).astype(np.float32)}   # 512 KiB


def cold(cmd: list[str], env: dict, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


# -- the registry -------------------------------------------------------------------------------
def bench_registry(args, work: Path) -> dict:
    """Registry side on a fresh SQLite file, or a throwaway PostgreSQL database (dropped)."""
    url = args.pg_url or f"sqlite:///{work / 'registry.db'}"
    if args.pg_url:
        url = fresh_pg(args.pg_url, schema=False)
    try:
        return _bench_registry(url, args, work)
    finally:
        if args.pg_url:
            drop_pg(args.pg_url, url)


def _bench_registry(url: str, args, work: Path) -> dict:
    from registry.core import Registry
    from registry.store.artifacts import ArtifactStore
    from registry.store.engine import upgrade

    upgrade(url)
    reg = Registry(url)
    reg.artifacts = ArtifactStore(str(work / "artifacts"))
    rng = np.random.default_rng(0)
    n = args.versions
    t = time.perf_counter()
    for i in range(n - 1):
        reg.register_model("bench", {"w": rng.normal(size=128)}, architecture="mlp",
                           config={"i": i}, metrics={"mae": float(i)})
        if (i + 1) % 2000 == 0:
            print(f"  registry: {i + 1} versions, {(i + 1) / (time.perf_counter() - t):.0f}/s",
                  flush=True)
    rate = (n - 1) / (time.perf_counter() - t)
    big = reg.register_model("bench", state_1mb(), architecture="mlp")
    reg.set_model_alias(big["ref"], "production")
    assert big["size"] > ONE_MB - 4096, big["size"]
    out = {"backend": reg.dialect, "versions": n, "register_per_s": rate}

    def pull():
        return reg.pull_model("bench@production").members

    assert pull()[0]["w0"].shape == (512, 256)
    out["pull_ms"] = median_ms(pull, args.repeat)
    out["list_ms"] = median_ms(lambda: reg.list_model_versions("bench", limit=50), args.repeat)
    out["alias_ms"] = median_ms(lambda: reg.model_alias("bench", "production"), args.repeat)
    env = {**os.environ, "NNP_DATABASE_URL": url, "NNP_ARTIFACTS": str(work / "artifacts")}
    nnp = str(Path(sys.executable).with_name("nnp"))
    out["cold_pull_ms"] = cold([nnp, "models", "pull", "bench@production", "-o",
                                str(work / "cold")], env)
    out["cold_python_ms"] = cold([sys.executable, "-c", "pass"], env)
    reg.close()
    return out


# -- MLflow -------------------------------------------------------------------------------------
def bench_mlflow(args, work: Path) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import mlflow
    from mlflow import MlflowClient
    from safetensors.numpy import load_file, save_file

    db = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(db)
    mlflow.set_registry_uri(db)
    exp = mlflow.create_experiment("bench", artifact_location=(work / "mlruns").as_uri())
    client = MlflowClient()
    client.create_registered_model("bench")
    small = work / "small"
    small.mkdir()
    rng = np.random.default_rng(0)
    n_full = min(100, args.mlflow_versions)
    t = time.perf_counter()
    for _ in range(n_full):
        f = small / "member_0.safetensors"
        save_file({"w": rng.normal(size=128)}, f)
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_artifact(str(f))
        client.create_model_version("bench", run.info.artifact_uri, run_id=run.info.run_id)
    out = {"register_per_s": n_full / (time.perf_counter() - t)}
    big = work / "big"
    big.mkdir()
    save_file(state_1mb(), big / "member_0.safetensors")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifact(str(big / "member_0.safetensors"))
    big_uri = run.info.artifact_uri
    pulls = work / "pulls"

    def pull():
        d = tempfile.mkdtemp(dir=pulls)
        p = mlflow.artifacts.download_artifacts("models:/bench@production", dst_path=d)
        return load_file(Path(p) / "member_0.safetensors")

    def measure(count):
        mv = client.create_model_version("bench", big_uri, run_id=run.info.run_id)
        client.set_registered_model_alias("bench", "production", mv.version)
        assert pull()["w0"].shape == (512, 256)
        rep = max(10, args.repeat // 10)
        return {"versions": count, "pull_ms": median_ms(pull, rep),
                "list_ms": median_ms(lambda: client.search_model_versions(
                    "name='bench'", max_results=50, order_by=["version_number DESC"]), rep),
                "alias_ms": median_ms(lambda: client.get_model_version_by_alias(
                    "bench", "production"), rep)}

    pulls.mkdir()
    count = n_full
    t = time.perf_counter()
    fill = 0
    for target in sorted({min(200, args.mlflow_versions), args.mlflow_versions}):
        while count < target - 1:
            client.create_model_version("bench", big_uri, run_id=run.info.run_id)
            count += 1
            fill += 1
        out[f"at_{target}"] = measure(target)
        count += 1
        print(f"  mlflow: {count} versions, {out[f'at_{target}']}", flush=True)
    out["fill_per_s"] = fill / max(time.perf_counter() - t, 1e-9)
    code = ("import mlflow,sys; mlflow.set_tracking_uri(sys.argv[1]); "
            "mlflow.set_registry_uri(sys.argv[1]); "
            "mlflow.artifacts.download_artifacts('models:/bench@production', dst_path=sys.argv[2])")
    out["cold_pull_ms"] = cold([sys.executable, "-c", code, db, str(work / "mlcold")],
                               dict(os.environ))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", type=int, default=10000)
    ap.add_argument("--mlflow-versions", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--pg-url", default=None, help="benchmark on PostgreSQL (admin URL)")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnp-bench-models-") as tmp:
        work = Path(tmp)
        (work / "reg").mkdir()
        r = bench_registry(args, work / "reg")
        print(f"\nnnp-registry ({r['backend']}, {r['versions']} versions of one model)")
        print(f"  register (incl. artifact write)   {r['register_per_s']:8.0f} versions/s  "
              "(target >= 100)")
        print(f"  warm pull 1 MB @production        {r['pull_ms']:8.2f} ms p50     (target < 10)")
        print(f"  list versions (page of 50)        {r['list_ms']:8.2f} ms p50     (target < 50)")
        print(f"  alias lookup                      {r['alias_ms']:8.2f} ms p50     (target < 50)")
        print(f"  cold `nnp models pull` (process)  {r['cold_pull_ms']:8.0f} ms       "
              f"(target < 1000; bare `python -c pass`: {r['cold_python_ms']:.0f} ms)")
        if args.no_mlflow:
            return
        (work / "ml").mkdir()
        m = bench_mlflow(args, work / "ml")
        print("\nMLflow model registry (SQLite + local files), ratio = MLflow / nnp-registry")
        print(f"  register (log_artifact + create_model_version) {m['register_per_s']:7.1f}/s"
              f"  ratio {r['register_per_s'] / m['register_per_s']:.1f}x")
        for key in sorted(k for k in m if k.startswith("at_")):
            a = m[key]
            print(f"  at {a['versions']} versions: pull {a['pull_ms']:.1f} ms "
                  f"(x{a['pull_ms'] / r['pull_ms']:.1f}), list {a['list_ms']:.1f} ms "
                  f"(x{a['list_ms'] / r['list_ms']:.1f}), alias {a['alias_ms']:.1f} ms "
                  f"(x{a['alias_ms'] / r['alias_ms']:.1f})")
        print(f"  cold pull (fresh process)  {m['cold_pull_ms']:.0f} ms  "
              f"(x{m['cold_pull_ms'] / r['cold_pull_ms']:.1f})")
        print(f"  (MLflow versions beyond the first 100 were added with create_model_version "
              f"alone, {m['fill_per_s']:.0f}/s incl. measurements)")


if __name__ == "__main__":
    main()
