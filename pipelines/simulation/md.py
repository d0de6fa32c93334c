"""Molecular-dynamics sampling of small molecules (one Dask task per trajectory)."""

from __future__ import annotations


def md_sample(formula: str, n_frames: int, temperature_k: float, seed: int,
              level: str = "emt", interval: int = 5, timestep_fs: float = 0.5) -> list:
    """Run Langevin MD of the G2 molecule ``formula`` and return labelled frames.

    Every ``interval`` steps a copy of the atoms is kept with the calculator's energy and
    forces (eV, eV/Å) in ``info['energy']`` / ``arrays['forces']``.
    """
    import numpy as np
    from ase import units
    from ase.build import molecule
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from .calculators import make_calculator

    atoms = molecule(formula)
    atoms.calc = make_calculator(level)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_k, friction=0.02,
                   fixcm=False, rng=rng)
    frames = []
    for _ in range(n_frames):
        dyn.run(interval)
        frame = atoms.copy()
        frame.calc = None
        frame.set_constraint()
        frame.info = {"energy": float(atoms.get_potential_energy()), "name": formula,
                      "md_temperature_k": temperature_k, "md_seed": seed}
        # the true forces: get_forces() would apply FixCom's mass-weighted projection
        frame.arrays["forces"] = atoms.get_forces(apply_constraint=False).copy()
        frames.append(frame)
    return frames


def relabel(frames: list, level: str) -> list:
    """Copies of ``frames`` with energy/forces from the labeler of ``level``."""
    from pipelines.labeling import get_labeler

    labeler = get_labeler(level)
    return [labeler.labelled(f) for f in frames]
