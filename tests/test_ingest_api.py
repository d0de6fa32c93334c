"""Registry.ingest from Python, on both backends: dedup, conflicts, canonical order, runs."""

from __future__ import annotations

import numpy as np
from helpers import counts, labelled_molecules
from sqlalchemy import func, select

from registry.chem.arrays import unpack, unpack_numbers
from registry.chem.frames import FrameBatch, LabelColumns
from registry.store.schema import CompositionElement, Label, LevelOfTheory, Structure


def two_level_batch(n=12, seed=0, frac_b=0.5) -> FrameBatch:
    rng = np.random.default_rng(seed)
    counts_ = rng.integers(3, 9, size=n)
    offsets = np.concatenate([[0], np.cumsum(counts_)]).astype(np.int64)
    total = int(offsets[-1])
    present_b = np.zeros(n, dtype=bool)
    present_b[: int(n * frac_b)] = True
    return FrameBatch(
        numbers=rng.choice([1, 6, 7, 8], size=total), positions=rng.random((total, 3)) * 4,
        offsets=offsets, cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), bool),
        charge=np.zeros(n, int), multiplicity=np.ones(n, int),
        labels={"wb97x/6-31g*": LabelColumns(np.ones(n, bool), energy=rng.normal(size=n),
                                             forces=rng.normal(size=(total, 3))),
                "ccsd(t)/cc-pvdz": LabelColumns(present_b, energy=rng.normal(size=n))})


def test_ingest_atoms_then_again_adds_nothing(registry):
    mols = labelled_molecules()
    s1 = registry.ingest(mols, level="wb97x/6-31g*")
    assert (s1.structures_new, s1.labels_new) == (5, 5)
    assert counts(registry) == (5, 5)
    s2 = registry.ingest(mols, level="wb97x/6-31g*")
    assert (s2.structures_new, s2.structures_existing) == (0, 5)
    assert (s2.labels_new, s2.labels_existing, s2.labels_conflicting) == (0, 5, 0)
    assert counts(registry) == (5, 5)


def test_ingest_without_level_stores_structures_only(registry):
    s = registry.ingest(labelled_molecules())
    assert (s.structures_new, s.labels_new) == (5, 0)
    assert counts(registry) == (5, 0)


def test_framebatch_two_levels_and_batches(registry):
    batch = two_level_batch(n=25)
    s = registry.ingest(batch, batch_size=7)  # 4 transactions
    assert s.structures_new == 25
    assert s.labels_new == 25 + 12
    with registry.session() as db:
        per_level = dict(db.execute(
            select(LevelOfTheory.name, func.count()).join(
                Label, Label.level_id == LevelOfTheory.id).group_by(LevelOfTheory.name)).all())
        atoms = db.scalar(select(func.sum(CompositionElement.count)).select_from(Structure)
                          .join(CompositionElement,
                                CompositionElement.composition_id == Structure.composition_id))
    assert per_level == {"wb97x/6-31g*": 25, "ccsd(t)/cc-pvdz": 12}
    assert atoms == int(batch.offsets[-1])
    run = registry.get_run(s.run_id)
    assert run["status"] == "ok"
    assert run["result"]["structures_new"] == 25
    assert run["result"]["labels_new"] == 37
    assert {e["ref"] for e in run["inputs"] if e["entity_type"] == "level"} == \
        {"wb97x/6-31g*", "ccsd(t)/cc-pvdz"}
    again = registry.ingest(two_level_batch(n=25), batch_size=10)
    assert (again.structures_new, again.labels_new, again.labels_existing) == (0, 0, 37)


def test_duplicates_inside_input_are_merged(registry):
    mols = labelled_molecules()
    shifted = [a.copy() for a in mols]
    for a, m in zip(shifted, mols, strict=True):
        a.positions += 3.0  # rigid translation: the same structures
        a.info["energy"] = m.info["energy"]
        perm = np.arange(len(a))[::-1]
        a.positions, a.numbers = a.positions[perm], a.numbers[perm]
        a.arrays["forces"] = m.arrays["forces"][perm]
    s = registry.ingest(mols + shifted, level="pbe")
    assert s.frames_read == 10
    assert s.duplicates_in_input == 5
    assert (s.structures_new, s.labels_new) == (5, 5)
    assert counts(registry) == (5, 5)


def test_conflicting_label_is_reported_not_written(registry):
    mols = labelled_molecules()
    registry.ingest(mols, level="pbe")
    changed = [a.copy() for a in mols]
    for a, m in zip(changed, mols, strict=True):
        a.arrays["forces"] = m.arrays["forces"]
        a.info["energy"] = m.info["energy"]
    changed[2].info["energy"] += 0.5
    s = registry.ingest(changed, level="pbe")
    assert (s.labels_new, s.labels_existing, s.labels_conflicting) == (0, 4, 1)
    assert len(s.conflicts) == 1 and s.conflicts[0]["level"] == "pbe"
    assert counts(registry) == (5, 5)
    with registry.session() as db:
        energies = sorted(db.scalars(select(Label.energy)).all())
    assert energies == sorted(a.info["energy"] for a in mols)


def test_forces_follow_canonical_atom_order(registry):
    mols = labelled_molecules(names=("CH3OH", "C2H6"))
    for a in mols:  # forces that identify their atom: f = 10 * position
        a.arrays["forces"] = a.positions * 10.0
    registry.ingest(mols, level="pbe")
    with registry.session() as db:
        rows = db.execute(select(Structure.numbers, Structure.positions, Label.forces)
                          .join(Label, Label.structure_id == Structure.id)).all()
    assert len(rows) == 2
    by_formula = {}
    for z, pos, f in rows:
        pos, forces = unpack(pos, (-1, 3)), unpack(f, (-1, 3))
        np.testing.assert_array_equal(forces, pos * 10.0)
        zs = unpack_numbers(z)
        assert list(zs) == sorted(zs)  # canonical order: by element first
        by_formula[len(zs)] = pos
    # stored positions are the input positions (permuted), not centred or rounded
    for a in mols:
        got = by_formula[len(a)]
        assert sorted(map(tuple, got)) == sorted(map(tuple, a.positions))


def test_batch_size_splits_into_whole_transactions(registry):
    mols = labelled_molecules(names=("H2O", "CH4", "NH3", "C2H6", "CH3OH", "C6H6", "CO2"))
    seen = []
    s = registry.ingest(mols, level="pbe", batch_size=3,
                        on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert (s.structures_new, s.labels_new) == (7, 7)
    with registry.session() as db:
        run_ids = set(db.scalars(select(Structure.run_id)).all())
    assert run_ids == {s.run_id}


def test_quantities_carried_by_some_frames_only(registry):
    """Stress on the crystal only: one batch, masked per frame; the molecule's label is
    identical (same hash, no stress) to ingesting it alone."""
    from ase.build import bulk, molecule
    from sqlalchemy import select

    from registry.store.schema import Label

    mol = molecule("H2O")
    mol.info["energy"] = -14.0
    mol.arrays["forces"] = np.zeros((3, 3))
    xtal = bulk("Cu", "fcc", a=3.6)
    xtal.info["energy"] = -3.5
    xtal.arrays["forces"] = np.zeros((1, 3))
    xtal.info["stress"] = np.arange(6) / 100.0
    summary = registry.ingest([mol, xtal], "pbe")
    assert (summary.structures_new, summary.labels_new) == (2, 2)
    with registry.session() as s:
        rows = s.execute(select(Label.hash, Label.stress, Label.max_force)
                         .order_by(Label.energy)).all()
    assert rows[0].stress is None and rows[1].stress is not None
    assert np.frombuffer(rows[1].stress, "<f8").tolist() == (np.arange(6) / 100.0).tolist()
    assert rows[0].max_force == 0.0
    alone = registry.ingest([mol], "pbe")  # same label, computed from a uniform batch
    assert (alone.labels_existing, alone.labels_conflicting) == (1, 0)


def test_concurrent_insert_between_prepare_and_write(registry, monkeypatch):
    """Another ingest commits the same rows after a part was prepared and before it is
    written: nothing is duplicated and the counts say what happened."""
    import registry.ingest.api as ing
    from registry.core import Registry

    batch = two_level_batch(n=30, seed=7)
    other = two_level_batch(n=30, seed=7)
    fired = []
    original = ing.prepare_part

    def prepared_then_raced(*args, **kw):
        out = original(*args, **kw)
        if not fired:
            fired.append(True)
            with Registry(registry.url) as rival:
                rival.ingest_batch(other)
        return out

    monkeypatch.setattr(ing, "prepare_part", prepared_then_raced)
    s = registry.ingest_batch(batch, batch_size=10)
    assert fired
    assert (s.structures_new, s.structures_existing) == (0, 30)
    assert (s.labels_new, s.labels_existing, s.labels_conflicting) == (0, 45, 0)
    assert counts(registry) == (30, 45)


def test_rows_in_hash_order_with_null_and_mixed_columns(registry):
    """Structures are written in hash order (on SQLite ids ascend with the hash); a
    column NULL in a whole part and one mixed inside a part are both stored exactly, as
    blobs or NULL (SQLite binds all-NULL columns as literals and arrays as bytearrays)."""
    from ase.build import bulk, molecule
    from sqlalchemy import text

    mols = [molecule(n) for n in ("H2O", "CH4", "NH3", "C2H6", "CH3OH")]
    xtal = bulk("Cu", "fcc", a=3.6)
    frames = [*mols, xtal]
    for k, a in enumerate(frames):
        a.info["energy"] = -float(k)
        a.arrays["forces"] = np.full((len(a), 3), 0.1 * k)
    frames[1].info["dipole"] = np.array([0.1, 0.2, 0.3])
    s = registry.ingest(frames, "pbe", batch_size=2)  # dipole: only where present
    assert (s.structures_new, s.labels_new) == (6, 6)
    with registry.session() as db:
        rows = db.execute(select(Structure.id, Structure.hash, Structure.cell,
                                 Structure.positions, Structure.n_atoms)
                          .order_by(Structure.id)).all()
        labels = db.execute(select(Label.energy, Label.dipole, Label.forces)
                            .order_by(Label.energy)).all()
        if registry.dialect == "sqlite":
            kinds = set(db.execute(text(
                "SELECT typeof(positions), typeof(numbers) FROM structures")).all())
            assert kinds == {("blob", "blob")}
            assert set(db.execute(text("SELECT typeof(forces) FROM labels")).scalars()) \
                == {"blob"}
    if registry.dialect == "sqlite":  # one writer (PostgreSQL writes two parts at once)
        assert [r.hash for r in rows] == sorted(r.hash for r in rows)
    cells = [r.cell for r in rows]
    assert sum(c is None for c in cells) == 5
    (cell,) = [c for c in cells if c is not None]
    assert np.frombuffer(cell, "<f8").reshape(3, 3).tolist() == xtal.cell.array.tolist()
    assert sorted(r.n_atoms for r in rows) == sorted(len(a) for a in frames)
    dipoles = {-round(e): d for e, d, _ in labels}
    assert np.frombuffer(dipoles[1], "<f8").tolist() == [0.1, 0.2, 0.3]
    assert all(d is None for k, d in dipoles.items() if k != 1)
    for e, _, f in labels:
        assert np.allclose(np.frombuffer(f, "<f8"), -0.1 * e)


def test_garbage_collector_state_is_restored(registry, monkeypatch):
    """Ingest pauses the cyclic collector while it works and restores its state after, also
    after bad input, after a failure while writing, and when ingests overlap in threads."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    import registry.ingest.api as ing
    from registry.errors import BadInput
    from registry.ingest.api import gc_paused

    assert gc.isenabled()
    registry.ingest_batch(two_level_batch(n=6))
    assert gc.isenabled()
    bad = two_level_batch(n=6, seed=3)
    bad.labels["wb97x/6-31g*"].energy[2] = np.nan
    with pytest.raises(BadInput):
        registry.ingest_batch(bad)
    assert gc.isenabled()

    def broken(*args, **kw):
        assert not gc.isenabled()
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(ing, "prepare_part", broken)
        with pytest.raises(RuntimeError, match="disk on fire"):
            registry.ingest_batch(two_level_batch(n=6, seed=4))
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(lambda s: registry.ingest_batch(two_level_batch(n=5, seed=s)), [1, 2]))
        assert not gc.isenabled()  # still inside the outer pause
    assert gc.isenabled()
    gc.disable()
    try:
        registry.ingest_batch(two_level_batch(n=4, seed=9))
        assert not gc.isenabled()  # a disabled collector stays disabled
    finally:
        gc.enable()
