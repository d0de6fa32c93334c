"""The calculator's linear-scaling neighbour list (pipelines/training/neighbors.py).

Periodic boxes of 190 atoms or more go through torchani's cell list (checked by counting its
calls); each result is compared with torchani's own all-pairs model on the same weights, and
energies and forces must not change when an atom moves by a lattice vector or the cell is
replicated. No database: the calculator is built from a config and freshly drawn members
(the cost and the invariances do not depend on trained weights).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase.build import bulk, molecule

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

HARTREE_EV = 27.211386245988


def make_calc(elements=("Cu",), members=2):
    from pipelines.training.ani import check_config, new_member
    from pipelines.training.calculator import NNPCalculator

    cfg = check_config({"elements": list(elements), "hidden": [16, 16]})
    cfg.update(arch="ani", delta=False, self_energies_ev={e: -1.0 for e in elements},
               reference_energies_ev={e: -10.0 - k for k, e in enumerate(elements)})
    sds = [{k: v.detach().clone() for k, v in new_member(cfg, seed).state_dict().items()}
           for seed in range(members)]
    return NNPCalculator(cfg, sds, dtype="float64")


@pytest.fixture(scope="module")
def calc():
    return make_calc()


@pytest.fixture
def cell_list_calls(monkeypatch):
    """How many times torchani's cell list ran."""
    from pipelines.training import neighbors

    calls = []
    real = neighbors.cell_list

    def counted(*args):
        calls.append(args[2].shape[1])
        return real(*args)

    monkeypatch.setattr(neighbors, "cell_list", counted)
    return calls


def torchani_energy(calc, atoms) -> float:
    """torchani's own forward on the same weights, all pairs, torchani's pbc handling."""
    import torch

    ani = calc.model.model
    sp = torch.as_tensor(atoms.numbers).unsqueeze(0)
    x = torch.as_tensor(atoms.positions).unsqueeze(0)
    cell = torch.as_tensor(np.asarray(atoms.cell))
    pbc = torch.as_tensor(atoms.pbc) if atoms.pbc.any() else None
    with torch.no_grad():
        e = ani((sp, x), cell if pbc is not None else None, pbc).energies
    refs = sum(calc.config["reference_energies_ev"][s] for s in atoms.get_chemical_symbols())
    return float(e[0]) * HARTREE_EV + refs


def energy_forces(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    forces = a.get_forces()                    # one call: the energy comes with it
    return a.get_potential_energy(), forces


def box(reps, cubic=True, seed=0):
    a = bulk("Cu", "fcc", a=3.6, cubic=cubic).repeat(reps)
    a.rattle(0.1, seed=seed)
    return a


@pytest.mark.parametrize("reps, cubic", [((4, 4, 4), True),     # 256 atoms, 2 buckets a side
                                         ((6, 6, 6), False),    # 216, triclinic
                                         ((7, 7, 2), True)])    # 392, one bucket along c
def test_cell_list_matches_torchani_all_pairs(calc, cell_list_calls, reps, cubic):
    atoms = box(reps, cubic)
    atoms.positions[0] += 2 * atoms.cell[0] - atoms.cell[2]   # well outside the box
    e, f = energy_forces(calc, atoms)
    assert cell_list_calls == [len(atoms)]
    assert e == pytest.approx(torchani_energy(calc, atoms), abs=1e-9)
    moved = atoms.copy()
    moved.wrap()
    e2, f2 = energy_forces(calc, moved)
    assert e2 == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(f2, f, atol=1e-9)


def test_lattice_vector_and_replication_with_the_cell_list(calc, cell_list_calls):
    small = box((3, 3, 3))                     # 108 atoms: all pairs
    e1, f1 = energy_forces(calc, small)
    big = small.repeat((2, 2, 2))              # 864 atoms: cell list
    e8, f8 = energy_forces(calc, big)
    assert cell_list_calls == [864]
    assert e8 == pytest.approx(8 * e1, abs=1e-8)
    np.testing.assert_allclose(f8[:len(small)], f1, atol=1e-9)
    shifted = big.copy()
    shifted.positions[5] += big.cell[1] - 3 * big.cell[0]
    e_s, f_s = energy_forces(calc, shifted)
    assert e_s == pytest.approx(e8, abs=1e-9)
    np.testing.assert_allclose(f_s, f8, atol=1e-9)


def test_stress_through_the_cell_list(calc, cell_list_calls):
    """Rattled atoms sit outside the box: torchani's cell list alone would drop their cell
    derivative (it wraps them against a detached cell)."""
    atoms = box((4, 4, 4), seed=3)
    a = atoms.copy()
    a.calc = calc
    stress = a.get_stress()
    assert cell_list_calls and (atoms.get_scaled_positions(wrap=False) < 0).any()
    eps = 1e-5
    for voigt, (j, k) in ((0, (0, 0)), (4, (0, 2))):       # xx and xz
        e = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[j, k] += sign * eps if j == k else sign * eps / 2
            strain[k, j] = strain[j, k]
            b = atoms.copy()
            b.set_cell(atoms.cell @ strain, scale_atoms=True)
            e.append(energy_forces(calc, b)[0])
        fd = (e[0] - e[1]) / (2 * eps) / atoms.get_volume()
        assert stress[voigt] == pytest.approx(fd, abs=1e-7)


def test_slab_periodic_in_two_directions(calc, cell_list_calls):
    slab = box((4, 4, 3), seed=1)              # 192 atoms
    slab.cell[2] = [0.0, 0.0, 30.0]            # vacuum, for torchani's own mixed-pbc peer
    slab.pbc = (True, True, False)
    e, f = energy_forces(calc, slab)
    assert cell_list_calls == [192]
    assert e == pytest.approx(torchani_energy(calc, slab), abs=1e-9)
    flat = slab.copy()
    flat.cell[2] = [0.0, 0.0, 0.0]             # ASE's usual slab: no vector along z
    flat.positions[7] += slab.cell[0] + slab.cell[1]
    flat.positions += [0.0, 0.0, -50.0]        # anywhere along the open direction
    e2, f2 = energy_forces(calc, flat)
    assert e2 == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(f2, f, atol=1e-9)
    with pytest.raises(Exception, match="stress"):
        a = slab.copy()
        a.calc = calc
        a.get_stress()


def test_large_molecule_through_the_bounding_cell(cell_list_calls):
    calc = make_calc(("H", "C", "O"))
    mols = [molecule("CH3OH"), molecule("H2O"), molecule("CH4")]
    cluster = mols[0].copy()
    rng = np.random.default_rng(0)
    for k in range(12):
        m = mols[k % 3].copy()
        m.translate(rng.uniform(-6, 6, 3))
        cluster += m
    e_all, f_all = energy_forces(calc, cluster)
    assert cell_list_calls == []
    calc.model.min_atoms_molecule = 10         # the threshold is 1770 atoms; force the list
    calc.reset()
    try:
        e, f = energy_forces(calc, cluster)
    finally:
        calc.model.min_atoms_molecule = 1770
    assert cell_list_calls == [len(cluster)]
    assert e == pytest.approx(e_all, abs=1e-9)
    np.testing.assert_allclose(f, f_all, atol=1e-9)
