"""Compositions: distinct element-count vectors of an ingest, created once, on both backends."""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select

from registry.chem.elements import formulas
from registry.ingest.composition_plan import _distinct_rows
from registry.ingest.compositions import PendingCompositions, plan_compositions
from registry.store.schema import Composition, CompositionElement, Structure


def _ragged(*mols: list[int]):
    numbers = np.concatenate([np.asarray(m, dtype=np.int64) for m in mols])
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in mols])]).astype(np.int64)
    return numbers, offsets


def test_plan_merges_equal_compositions_in_any_atom_order():
    numbers, offsets = _ragged([8, 1, 1], [1, 8, 1], [6, 1, 1, 1, 1], [1, 1], [1, 6, 1, 1, 1])
    c = plan_compositions(numbers, offsets, np.arange(5))
    assert len(c) == 3
    assert [c.hill[k] for k in c.of] == ["H2O", "H2O", "CH4", "H2", "CH4"]
    for k, hill in enumerate(c.hill):
        comp = tuple((int(z), int(n)) for z, n in zip(c.zs, c.counts[k], strict=True) if n)
        assert formulas(comp) == (hill, c.reduced[k], c.anonymous[k])
    only_some = plan_compositions(numbers, offsets, np.array([3, 0]))
    assert [only_some.hill[k] for k in only_some.of] == ["H2", "H2O"]


def test_distinct_rows_wide_counts_fall_back_to_row_unique():
    """Counts too large for one int64 key per row (big crystals, many elements) give the
    same answer through the row-wise unique."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 3, size=(50, 4)).astype(np.int32)
    wide = np.concatenate([small, rng.integers(0, 2, size=(50, 40)).astype(np.int32)], axis=1)
    wide[0, :] = 10 ** 6  # radix product far beyond 2**62
    for comp in (small, wide):
        rows, of = _distinct_rows(comp)
        assert np.array_equal(rows[of], comp)
        assert len(rows) == len({tuple(r) for r in comp.tolist()})


def ensure_compositions(engine, comps):
    with PendingCompositions(engine, comps) as pending:
        return pending.commit()


def test_ensure_creates_once_and_returns_stable_ids(registry):
    numbers, offsets = _ragged([8, 1, 1], [6, 1, 1, 1, 1], [29, 29, 29, 29])
    first = plan_compositions(numbers, offsets, np.arange(3))
    ids = ensure_compositions(registry.engine, first).copy()
    assert len(set(ids.tolist())) == 3
    numbers2, offsets2 = _ragged([1, 1, 8], [7, 1, 1, 1])  # one known, one new
    second = plan_compositions(numbers2, offsets2, np.arange(2))
    ids2 = ensure_compositions(registry.engine, second)
    assert ids2[second.hill.index("H2O")] == ids[first.hill.index("H2O")]
    assert ids2[second.hill.index("H3N")] not in ids
    with registry.session() as s:
        rows = s.execute(select(Composition.formula_hill, Composition.formula_reduced,
                                Composition.formula_anonymous, Composition.n_atoms,
                                Composition.nelements).order_by(Composition.id)).all()
        elements = s.execute(select(Composition.formula_hill, CompositionElement.z,
                                    CompositionElement.count)
                             .join(Composition, Composition.id == CompositionElement.composition_id)
                             .order_by(Composition.formula_hill, CompositionElement.z)).all()
    assert sorted(tuple(r) for r in rows) == [
        ("CH4", "CH4", "A4B", 5, 2), ("Cu4", "Cu", "A", 4, 1), ("H2O", "H2O", "A2B", 3, 2),
        ("H3N", "H3N", "A3B", 4, 2)]
    assert [tuple(r) for r in elements] == [
        ("CH4", 1, 4), ("CH4", 6, 1), ("Cu4", 29, 4), ("H2O", 1, 2), ("H2O", 8, 1),
        ("H3N", 1, 3), ("H3N", 7, 1)]


def test_ingest_points_structures_at_their_composition(registry):
    from ase import Atoms

    mols = [Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
            Atoms("OH2", positions=[[0, 0, 0.1], [0.96, 0, 0], [-0.24, 0.93, 0]]),
            Atoms("NH3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])]
    assert registry.ingest(mols).structures_new == 3
    with registry.session() as s:
        got = s.execute(select(Composition.formula_hill, func.count())
                        .join(Structure, Structure.composition_id == Composition.id)
                        .group_by(Composition.formula_hill)
                        .order_by(Composition.formula_hill)).all()
        n_comp = s.scalar(select(func.count()).select_from(Composition))
    assert [tuple(r) for r in got] == [("H2O", 2), ("H3N", 1)]
    assert n_comp == 2
    assert registry.ingest(mols).structures_new == 0
    with registry.session() as s:
        assert s.scalar(select(func.count()).select_from(Composition)) == 2


def test_pending_compositions_commit_only_when_told(registry):
    """Created on a helper connection; kept by commit(), rolled back by leaving without it
    (the ingest's plan refused the input)."""
    def n_rows():
        with registry.session() as s:
            return (s.scalar(select(func.count()).select_from(Composition)),
                    s.scalar(select(func.count()).select_from(CompositionElement)))

    numbers, offsets = _ragged([8, 1, 1], [6, 1, 1, 1, 1])
    with PendingCompositions(registry.engine, plan_compositions(numbers, offsets)):
        pass
    assert n_rows() == (0, 0)
    try:
        with PendingCompositions(registry.engine, plan_compositions(numbers, offsets)):
            raise ValueError("bad input")
    except ValueError:
        pass
    assert n_rows() == (0, 0)
    with PendingCompositions(registry.engine, plan_compositions(numbers, offsets)) as p:
        ids = p.commit()
    assert len(set(ids.tolist())) == 2 and n_rows() == (2, 4)


def test_structures_point_at_their_own_composition(registry, monkeypatch):
    """Each structure's composition matches its atoms; on PostgreSQL through the staged path
    (taken when a concurrent ingest committed some of the same rows first), which must store
    new structures exactly as the COPY path does."""
    from ase.build import molecule

    from registry.chem.arrays import unpack_numbers
    from registry.chem.elements import compact_composition, formulas_batch

    if registry.dialect == "postgresql":
        import psycopg

        import registry.ingest.writers as writers

        def refuse(*args, **kw):
            raise psycopg.errors.UniqueViolation("forced")

        monkeypatch.setattr(writers, "_write_postgres_copy", refuse)
    mols = [molecule(n) for n in ("H2O", "CH4", "NH3", "C2H6", "CH3OH", "C6H6")]
    s = registry.ingest(mols)
    assert s.structures_new == 6
    with registry.session() as db:
        rows = db.execute(select(Structure.numbers, Structure.n_atoms, Composition.formula_hill,
                                 Composition.n_atoms)
                          .join(Composition, Composition.id == Structure.composition_id)).all()
    assert len(rows) == 6
    for numbers, n_atoms, hill, comp_atoms in rows:
        z = unpack_numbers(numbers)
        zs, comp = compact_composition(z, np.array([0, len(z)]))
        assert formulas_batch(zs, comp)[0] == [hill]
        assert n_atoms == comp_atoms == len(z)
    assert registry.count('elements HAS ALL "C","O"') == 1
