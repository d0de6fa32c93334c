"""Training on a real multi-process Dask cluster, as deployed: a scheduler and two workers
started with the ``dask scheduler`` / ``dask worker`` programs on loopback, reached through
NNP_DASK_SCHEDULER (no client passed in), against PostgreSQL. Each member task runs in a
worker process of its own and opens the registry from the URL there, so this exercises what
the in-process LocalCluster of tests/test_training.py cannot: pickling the task and its
arguments, the workers' own environment (NNP_ARTIFACTS, NNP_CACHE) and concurrent writes to
one PostgreSQL database from separate processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_training import SMALL, make_dataset

pytestmark = pytest.mark.slow

# bounds on every wait: a cluster that does not come up fails the test, never hangs it
START_TIMEOUT = 60
STOP_TIMEOUT = 10


def _dask_cmd(*args: str) -> list[str]:
    """The ``dask`` program of this interpreter's environment, so the workers import the
    same project and packages as the test."""
    exe = Path(sys.executable).with_name("dask")
    if exe.exists():
        return [str(exe), *args]
    return [sys.executable, "-m", "dask", *args]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    # a session of its own: teardown kills the nanny and its worker process together
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(os.environ),
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the nanny's worker child may outlive the nanny; it shares the process group
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(tmp_path.glob("*.log")))


@pytest.fixture
def cli_cluster(registry, tmp_path, monkeypatch):
    """Addresses of a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1;
    NNP_DASK_SCHEDULER points at the scheduler. The workers inherit the environment set
    here and by ``registry`` (NNP_DATABASE_URL, NNP_ARTIFACTS, NNP_CACHE)."""
    from distributed import Client

    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHANI_NO_WARN_EXTENSIONS", "1")
    sched_file = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start(_dask_cmd("scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--scheduler-file", str(sched_file),
                                      "--no-dashboard"), tmp_path / "scheduler.log"))
        deadline = time.monotonic() + START_TIMEOUT
        while not sched_file.exists() or not sched_file.read_text().strip():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail("dask scheduler did not start\n" + _logs(tmp_path))
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in range(2):
            procs.append(_start(_dask_cmd("worker", "--scheduler-file", str(sched_file),
                                          "--host", "127.0.0.1", "--nthreads", "1",
                                          "--nworkers", "1", "--no-dashboard",
                                          "--name", f"w{i}"),
                                tmp_path / f"worker{i}.log"))
        with Client(scheduler_file=str(sched_file), timeout=START_TIMEOUT) as c:
            try:
                c.wait_for_workers(2, timeout=START_TIMEOUT)
            except TimeoutError:
                pytest.fail("two dask workers did not join\n" + _logs(tmp_path))
            workers = set(c.scheduler_info()["workers"])
        monkeypatch.setenv("NNP_DASK_SCHEDULER", address)
        yield {"address": address, "workers": workers}
    finally:
        for p in reversed(procs):
            _stop(p)


# PostgreSQL only: the conftest fixture's sqlite param is overridden, not skipped
@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)
def test_members_train_on_separate_worker_processes(registry, cli_cluster, tmp_path):
    assert registry.dialect == "postgresql"
    from pipelines.training.ensemble import train

    make_dataset(registry)
    out = train(registry, "mols", ensemble=2, epochs=2, patience=5, config=dict(SMALL),
                device="cpu", verify=False, name="ani-cluster")
    members = out["members"]
    assert [m["member"] for m in members] == [0, 1]
    workers = [m["worker"] for m in members]
    assert all(w and w.startswith("tcp://127.0.0.1:") for w in workers), workers
    assert len(set(workers)) == 2, f"both members ran on {workers[0]}\n" + _logs(tmp_path)
    # the CLI-started workers, not a local cluster the driver made for itself
    assert set(workers) == cli_cluster["workers"], (workers, cli_cluster["workers"])

    assert out["model"] == "ani-cluster:1"
    v = registry.show_model("ani-cluster@latest")
    assert v["n_members"] == 2
    run = registry.get_run(out["run_id"])
    assert run["status"] == "ok"
