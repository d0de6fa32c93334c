"""Small data built by the tests themselves (nothing downloaded)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule


def labelled_molecules(names=("H2O", "CH4", "NH3", "C2H6", "CH3OH"), seed=0, level_suffix=""):
    """Small molecules with random energies in info['energy'] and forces in arrays."""
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        a = molecule(name)
        a.positions += rng.normal(scale=0.01, size=a.positions.shape)
        a.info["energy" + level_suffix] = float(rng.normal(-100, 10))
        a.arrays["forces" + level_suffix] = rng.normal(size=(len(a), 3))
        out.append(a)
    return out


def crystal(seed=0) -> Atoms:
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.positions += np.random.default_rng(seed).normal(scale=0.02, size=a.positions.shape)
    return a


def counts(reg) -> tuple[int, int]:
    """(structures, labels) row counts."""
    from sqlalchemy import func, select

    from registry.store.schema import Label, Structure

    with reg.session() as s:
        return (s.scalar(select(func.count()).select_from(Structure)),
                s.scalar(select(func.count()).select_from(Label)))


def finite_difference_forces(atoms, calc, h: float = 1e-4) -> np.ndarray:
    """−dE/dx of ``calc`` at ``atoms`` by central differences of step ``h`` Å."""
    out = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for j in range(3):
            b = atoms.copy()
            b.calc = calc
            b.positions[i, j] += h
            ep = b.get_potential_energy()
            b.positions[i, j] -= 2 * h
            out[i, j] = -(ep - b.get_potential_energy()) / (2 * h)
    return out


def emt_labelled(atoms, forces: bool = True):
    """``atoms`` with ASE's EMT energy in ``info`` (and forces in ``arrays``), no calculator."""
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    atoms.info["energy"] = atoms.get_potential_energy()
    if forces:
        atoms.arrays["forces"] = atoms.get_forces()
    atoms.calc = None
    return atoms


def emt_frames(n_per_molecule: int = 12, seed: int = 0, forces: bool = True,
               scale: float = 0.06):
    """Rattled H2O, CH4 and NH3 labelled with ASE's EMT (energy, and forces unless told
    not): tiny training data that needs no download."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    out = []
    for name in ("H2O", "CH4", "NH3"):
        for _ in range(n_per_molecule):
            a = molecule(name)
            a.positions += rng.normal(scale=scale, size=a.positions.shape)
            out.append(emt_labelled(a, forces))
    return out

