"""Four processes ingesting overlapping data at once: no duplicates, no deadlock, all there.

Runs on PostgreSQL (row locks, ON CONFLICT) and on SQLite (one writer at a time, busy
timeout). Workers are spawned processes, each with its own connection.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
from sqlalchemy import func, select

from registry.chem.frames import FrameBatch, LabelColumns
from registry.store.schema import CompositionElement, Label, Structure

POOL, WINDOW, STEP, WORKERS, BATCH = 1200, 600, 200, 4, 50
LEVELS = ("wb97x/6-31g*", "ccsd(t)/cc-pvdz")


def pool_batch(seed: int = 7) -> FrameBatch:
    """A deterministic pool of small molecules; two levels (the second on every 3rd)."""
    rng = np.random.default_rng(seed)
    n = POOL
    sizes = rng.integers(3, 12, size=n)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    total = int(offsets[-1])
    return FrameBatch(
        numbers=rng.choice([1, 6, 7, 8], size=total), positions=rng.random((total, 3)) * 5,
        offsets=offsets, cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), bool),
        charge=np.zeros(n, int), multiplicity=np.ones(n, int),
        labels={LEVELS[0]: LabelColumns(np.ones(n, bool), energy=rng.normal(size=n),
                                        forces=rng.normal(size=(total, 3))),
                LEVELS[1]: LabelColumns(np.arange(n) % 3 == 0, energy=rng.normal(size=n))})


def subset(b: FrameBatch, idx: np.ndarray) -> FrameBatch:
    """Frames ``idx`` of ``b`` (any order) as a new batch."""
    counts = np.diff(b.offsets)[idx]
    atoms = np.concatenate([np.arange(b.offsets[i], b.offsets[i + 1]) for i in idx])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    labels = {
        lv: LabelColumns(c.present[idx], energy=c.energy[idx],
                         forces=None if c.forces is None else c.forces[atoms])
        for lv, c in b.labels.items()}
    return FrameBatch(b.numbers[atoms], b.positions[atoms], offsets, b.cells[idx], b.pbc[idx],
                      b.charge[idx], b.multiplicity[idx], labels)


def worker(url: str, k: int, barrier) -> dict:
    from registry.core import Registry

    # overlapping windows, each in its own order, so workers race for the same rows
    idx = (np.arange(WINDOW) + k * STEP) % POOL
    idx = np.random.default_rng(k).permutation(idx)
    batch = subset(pool_batch(), idx)
    reg = Registry(url)
    try:
        barrier.wait(timeout=60)
        return reg.ingest(batch, batch_size=BATCH).to_dict()
    finally:
        reg.close()


def test_concurrent_overlapping_ingest(db_url):
    from registry.core import Registry

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(WORKERS)
        with ctx.Pool(WORKERS) as pool:
            jobs = [pool.apply_async(worker, (db_url, k, barrier)) for k in range(WORKERS)]
            results = [j.get(timeout=120) for j in jobs]

    pool_ = pool_batch()
    n_b = int(pool_.labels[LEVELS[1]].present.sum())
    reg = Registry(db_url)
    try:
        with reg.session() as s:
            n_struct = s.scalar(select(func.count()).select_from(Structure))
            n_hash = s.scalar(select(func.count(func.distinct(Structure.hash))))
            per_level = s.execute(select(Label.level_id, func.count(),
                                         func.count(func.distinct(Label.structure_id)))
                                  .group_by(Label.level_id)).all()
            orphan = s.scalar(select(func.count()).select_from(Structure).where(
                ~select(CompositionElement.z).where(
                    CompositionElement.composition_id == Structure.composition_id).exists()))
    finally:
        reg.close()
    assert n_struct == n_hash == POOL
    assert sorted((n, d) for _, n, d in per_level) == sorted([(POOL, POOL), (n_b, n_b)])
    assert orphan == 0
    assert sum(r["structures_new"] for r in results) == POOL
    assert sum(r["labels_new"] for r in results) == POOL + n_b
    assert all(r["labels_conflicting"] == 0 for r in results)
    for r in results:
        assert r["structures_new"] + r["structures_existing"] == WINDOW
