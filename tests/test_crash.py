"""SIGKILL an ingest mid-way: only whole batches remain; re-running completes it, no duplicates.

The ingest runs in a child process (this file run as a script) whose progress callback
pauses between batches, so the kill lands while batches are still being written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
from sqlalchemy import create_engine, func, select

N, BATCH = 1500, 100
LEVELS = ("wb97x/6-31g*", "ccsd(t)/cc-pvdz")


def data():
    from registry.chem.frames import FrameBatch, LabelColumns

    rng = np.random.default_rng(11)
    sizes = rng.integers(3, 10, size=N)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    return FrameBatch(
        numbers=rng.choice([1, 6, 8], size=total), positions=rng.random((total, 3)) * 5,
        offsets=offsets, cells=np.zeros((N, 3, 3)), pbc=np.zeros((N, 3), bool),
        charge=np.zeros(N, int), multiplicity=np.ones(N, int),
        labels={LEVELS[0]: LabelColumns(np.ones(N, bool), energy=rng.normal(size=N),
                                        forces=rng.normal(size=(total, 3))),
                LEVELS[1]: LabelColumns(np.arange(N) % 4 == 0, energy=rng.normal(size=N))})


def _counts(url):
    from registry.store.schema import Label, Structure

    eng = create_engine(url)
    try:
        with eng.connect() as c:
            n_s = c.scalar(select(func.count()).select_from(Structure))
            per = c.execute(select(Label.structure_id, func.count()).group_by(
                Label.structure_id)).all()
            dup = c.scalar(select(func.count()).select_from(
                select(Label.structure_id).group_by(Label.structure_id, Label.level_id)
                .having(func.count() > 1).subquery()))
        return n_s, dict(per), dup
    finally:
        eng.dispose()


def test_sigkill_leaves_whole_batches_and_rerun_completes(db_url):
    from registry.core import Registry

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, __file__, db_url], env=env,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        n_s = 0
        while n_s < 3 * BATCH:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.02)
            try:
                n_s = _counts(db_url)[0]
            except Exception:  # noqa: BLE001 - schema busy / locked while starting
                n_s = 0
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    n_s, per_structure, dup = _counts(db_url)
    assert 0 < n_s < N, "kill did not land mid-way"
    assert n_s % BATCH == 0, f"{n_s} structures: a partial batch was committed"
    assert len(per_structure) == n_s  # every stored structure has its labels
    assert dup == 0

    reg = Registry(db_url)
    try:
        killed = reg.list_runs(kind="ingest")
        assert [r["status"] for r in killed] == ["interrupted"]  # not left looking "running"
        s = reg.ingest(data(), batch_size=BATCH)
        n_b = int(data().labels[LEVELS[1]].present.sum())
        assert s.structures_existing == n_s and s.structures_new == N - n_s
        assert s.labels_conflicting == 0
        assert s.labels_new + s.labels_existing == N + n_b
        again = reg.ingest(data(), batch_size=BATCH)
        assert (again.structures_new, again.labels_new) == (0, 0)
    finally:
        reg.close()
    n_s, per_structure, dup = _counts(db_url)
    assert n_s == N and dup == 0
    assert sum(per_structure.values()) == N + n_b


if __name__ == "__main__":  # the child: ingest slowly, one batch at a time
    from registry.core import Registry

    registry = Registry(sys.argv[1])
    registry.ingest(data(), batch_size=BATCH, on_progress=lambda done, total: time.sleep(0.1))
    registry.close()
