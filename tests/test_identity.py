"""Identity hashing (pure numpy, no database): each invariance and each difference."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from registry.chem.identity import HASH_VERSION, TOLERANCE, structure_hashes


def hashes(*frames: Atoms, charge=None, mult=None) -> list[str]:
    counts = [len(a) for a in frames]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    b = len(frames)
    h, _ = structure_hashes(
        np.concatenate([a.numbers for a in frames]),
        np.concatenate([a.positions for a in frames]).astype(np.float64), offsets,
        np.stack([a.cell.array for a in frames]).astype(np.float64),
        np.stack([a.pbc for a in frames]).astype(bool),
        np.zeros(b, dtype=np.int64) if charge is None else np.asarray(charge),
        np.ones(b, dtype=np.int64) if mult is None else np.asarray(mult))
    return list(h)


def one(a: Atoms, **kw) -> str:
    return hashes(a, **kw)[0]


def jittered(name="CH3CH2OH", seed=0) -> Atoms:
    a = molecule(name)
    a.positions += np.random.default_rng(seed).normal(scale=0.05, size=a.positions.shape)
    return a


def chfclbr() -> Atoms:
    """A chiral molecule: C with H, F, Cl, Br on a tetrahedron (slightly irregular)."""
    t = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3)
    lengths = np.array([1.09, 1.35, 1.77, 1.94])
    return Atoms("CHFClBr", positions=np.vstack([[0, 0, 0], t * lengths[:, None]]))


def test_version_is_declared():
    assert HASH_VERSION == 1
    assert TOLERANCE == pytest.approx(1e-4)


def test_atom_order_does_not_matter():
    a = jittered()
    perm = np.random.default_rng(1).permutation(len(a))
    assert one(a) == one(a[perm])
    assert one(a) == one(a[::-1])


def test_rigid_translation_of_molecule():
    a = jittered()
    b = a.copy()
    b.positions += [12.5, -3.25, 7.0]
    assert one(a) == one(b)


def test_batch_gives_same_hashes_as_singles():
    frames = [jittered(n, i) for i, n in enumerate(("H2O", "CH4", "NH3", "C6H6"))]
    assert hashes(*frames) == [one(a) for a in frames]


def test_periodic_images_hash_alike():
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.positions += np.random.default_rng(2).normal(scale=0.02, size=a.positions.shape)
    b = a.copy()
    shifts = np.array([[1, 0, 0], [0, -2, 1], [3, 1, -1], [0, 0, 0]])
    b.positions += shifts @ a.cell.array  # atoms moved by lattice vectors, outside the cell
    assert (b.get_scaled_positions(wrap=False) > 1).any() or \
        (b.get_scaled_positions(wrap=False) < 0).any()
    assert one(a) == one(b)
    c = b.copy()
    c.wrap()
    assert one(a) == one(c)
    # permuted and shifted at once
    assert one(a) == one(b[[3, 1, 0, 2]])


def test_periodic_crystal_differs_from_same_atoms_as_molecule():
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    m = a.copy()
    m.pbc = False
    m.cell = np.zeros((3, 3))
    assert one(a) != one(m)


def test_different_cells_differ():
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    b = bulk("Cu", "fcc", a=3.7, cubic=True)
    assert one(a) != one(b)


def test_rounding_tolerance_keeps_hash_for_tiny_noise():
    rng = np.random.default_rng(3)
    base = [jittered("CH3CH2OH", s) for s in range(50)]
    same = 0
    for a in base:
        b = a.copy()
        b.positions += rng.normal(scale=1e-9, size=b.positions.shape)
        same += one(a) == one(b)
    # A point sitting on a rounding boundary can flip; with 1e-9 Å noise that is rare.
    assert same >= 48


def test_noise_above_tolerance_changes_hash():
    a = jittered()
    b = a.copy()
    b.positions[0] += [5 * TOLERANCE, 0, 0]
    assert one(a) != one(b)


def test_enantiomers_differ():
    a = chfclbr()
    mirror = a.copy()
    mirror.positions[:, 0] *= -1
    assert one(a) != one(mirror)
    # a translated mirror image keeps the mirror's hash
    shifted = mirror.copy()
    shifted.positions += 1.0
    assert one(mirror) == one(shifted)


def test_different_geometries_differ():
    a = jittered("CH3CH2OH", 0)
    b = jittered("CH3CH2OH", 1)
    assert one(a) != one(b)
    assert one(molecule("H2O")) != one(molecule("NH3"))


def test_charge_and_multiplicity_change_hash():
    a = jittered("H2O")
    h0 = one(a)
    assert one(a, charge=[1]) != h0
    assert one(a, mult=[3]) != h0
    assert one(a, charge=[0], mult=[1]) == h0


def test_canonical_order_is_a_permutation_per_structure():
    frames = [jittered("CH4", 0), jittered("H2O", 1)]
    offsets = np.array([0, 5, 8])
    numbers = np.concatenate([a.numbers for a in frames])
    pos = np.concatenate([a.positions for a in frames])
    _, order = structure_hashes(numbers, pos, offsets, np.zeros((2, 3, 3)),
                                np.zeros((2, 3), bool), np.zeros(2, int), np.ones(2, int))
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:]) == [5, 6, 7]
    assert list(numbers[order][:5]) == sorted(numbers[:5])


def test_element_table_matches_ase():
    from ase.data import chemical_symbols

    from registry.chem.elements import MAX_Z, SYMBOLS

    assert list(SYMBOLS) == list(chemical_symbols[: MAX_Z + 1])


def test_threaded_hashing_matches_one_thread(monkeypatch):
    """Slices hashed in threads give the same hashes and atom order as one pass, for a mix
    of molecules and crystals."""
    import registry.chem.identity as ident

    frames = [molecule(n) for n in ("H2O", "CH4", "C6H6", "NH3", "CH3OH")] * 3
    frames += [bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True) for k in range(4)]
    counts = [len(a) for a in frames]
    args = (np.concatenate([a.numbers for a in frames]),
            np.concatenate([a.positions for a in frames]).astype(np.float64),
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.stack([a.cell.array for a in frames]).astype(np.float64),
            np.stack([a.pbc for a in frames]), np.zeros(len(frames), int),
            np.ones(len(frames), int))
    one = structure_hashes(*args)
    monkeypatch.setattr(ident, "_SLICE", 4)  # 19 frames in 5 slices of 3 or 4
    for threads in (1, 2, 3):
        got = structure_hashes(*args, threads=threads)
        assert got[0] == one[0]
        np.testing.assert_array_equal(got[1], one[1])
