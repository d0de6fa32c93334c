"""Sampling with the committee: candidate frames and their disagreement ρ.

ρ = the members' energy standard deviation / √atoms (eV/√atom; ANI-1x's criterion), from
:class:`pipelines.training.calculator.NNPCalculator` (the ensemble mean drives the atoms).

- ``md``: Langevin MD (ASE; molecules and periodic cells) from a seed at a temperature; a
  frame every ``interval`` steps. A trajectory stops early when two atoms come closer than
  ``min_distance``, the force on an atom exceeds ``max_force`` or a value is not finite (an
  early model drives MD into unphysical geometries): the reason is recorded with the
  trajectory and the offending frame is not a candidate.
- ``nms``: normal-mode sampling (ANI-1's NMS, Smith et al. 2017) around a seed: the model's
  Hessian by central differences of its forces; each sample displaces along every
  vibrational mode i by ±√(3 c_i N kT / K_i), random c_i summing to 1 (force constants below
  :data:`K_MIN` are raised to it, so soft and unstable modes do not blow up). Samples with
  atoms closer than ``min_distance`` are dropped and counted.
- ``pool``: the seeds themselves, as given (a fixed candidate pool), grouped into
  "trajectories" by the campaign's ``groups``.

:func:`sample_task` is one Dask task: it opens the registry from the URL, pulls the model
(hash-verified) once, samples its trajectories (one for MD and NMS; several pool groups) and
writes each with its candidates in one transaction (nothing for a trajectory written
before).
"""

from __future__ import annotations

import time

import numpy as np

K_MIN = 0.5  # eV/Å², the smallest force constant NMS displaces along
NMS_DELTA = 0.005  # Å, central-difference step of the Hessian


def committee(calc, n_atoms: int) -> dict:
    """Energy (mean), energy_std and ρ of the calculator's last result."""
    energies = np.asarray(calc.results["energies"], dtype=float)
    std = float(energies.std(ddof=1)) if len(energies) > 1 else 0.0
    return {"energy": float(energies.mean()), "energy_std": std,
            "rho": std / np.sqrt(n_atoms)}


def frame(atoms, step: int, temperature: float, values: dict) -> dict:
    cell = np.asarray(atoms.cell, dtype=float) if atoms.pbc.any() else None
    return {"numbers": atoms.numbers.copy(), "positions": atoms.get_positions().copy(),
            "cell": cell, "pbc": atoms.pbc.copy(), "charge": atoms.info.get("charge", 0),
            "multiplicity": atoms.info.get("multiplicity", 1), "step": step,
            "temperature": temperature, **values}


def stop_reason(atoms, energy: float, forces, min_distance: float,
                max_force: float) -> str | None:
    """Why a trajectory must stop at this geometry, or None."""
    from pipelines.simulation.dynamics import closest_pair

    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        return "non-finite energy or forces"
    if min_distance > 0 and len(atoms) > 1:
        pair = closest_pair(atoms, min_distance)
        if pair is not None:
            i, j, d = pair
            return (f"atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) are "
                    f"{d:.3f} Å apart, closer than --min-distance {min_distance:g} Å")
    if max_force > 0:
        norms = np.linalg.norm(forces, axis=1)
        i = int(np.argmax(norms))
        if norms[i] > max_force:
            return (f"force {norms[i]:.3g} eV/Å on atom {i} ({atoms[i].symbol}) exceeds "
                    f"--max-force {max_force:g} eV/Å")
    return None


def md_frames(atoms, calc, s: dict, temperature: float, seed: int):
    """(frames, steps done, stop reason) of Langevin MD from ``atoms``."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    thermalize = getattr(vd, "thermalize_momenta", vd.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=temperature, rng=rng)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, s["timestep_fs"] * units.fs, temperature_K=temperature,
                   friction=s["friction_per_fs"] / units.fs, fixcm=False, rng=rng)
    frames, done = [], 0
    for _ in dyn.irun(s["steps"]):
        step = dyn.nsteps
        forces = atoms.get_forces(apply_constraint=False)  # the model's, not FixCom's
        energy = float(atoms.get_potential_energy())
        reason = stop_reason(atoms, energy, forces, s["min_distance"], s["max_force"])
        if reason is not None:
            return frames, step, reason
        done = step
        if step % s["interval"] == 0:
            frames.append(frame(atoms, step, temperature, committee(calc, len(atoms))))
    return frames, done, None


def hessian(atoms, calc, delta: float = NMS_DELTA) -> np.ndarray:
    """(3N, 3N) Hessian of the calculator's energy, eV/Å², by central differences of the
    forces (symmetrized)."""
    a = atoms.copy()
    a.calc = calc
    x0 = a.get_positions().copy()
    n = 3 * len(a)
    h = np.empty((n, n))
    for k in range(n):
        cols = []
        for sign in (1.0, -1.0):
            x = x0.copy()
            x.reshape(-1)[k] += sign * delta
            a.set_positions(x)
            cols.append(a.get_forces().reshape(-1))
        h[k] = -(cols[0] - cols[1]) / (2 * delta)
    return 0.5 * (h + h.T)


def nms_frames(atoms, calc, s: dict, temperature: float, seed: int):
    """(frames, samples, note): ``s["steps"]`` normal-mode samples around ``atoms``; the
    note counts samples dropped for a close contact (None when none was)."""
    from ase import units

    rng = np.random.default_rng(seed)
    n_atoms = len(atoms)
    k, modes = np.linalg.eigh(hessian(atoms, calc))
    # the rigid motions: 3 translations in a periodic cell, 3 + 3 rotations for a molecule
    n_rigid = 3 if atoms.pbc.all() else min(6, 3 * n_atoms - 1)
    keep = np.argsort(np.abs(k))[n_rigid:]
    k, modes = np.maximum(k[keep], K_MIN), modes[:, keep]
    kt = units.kB * temperature
    a = atoms.copy()
    a.calc = calc
    x0 = atoms.get_positions()
    frames, dropped, last = [], 0, None
    for step in range(s["steps"]):
        c = rng.random(len(k))
        c /= c.sum()
        amp = rng.choice((-1.0, 1.0), size=len(k)) * np.sqrt(3 * c * n_atoms * kt / k)
        a.set_positions(x0 + (modes @ amp).reshape(-1, 3))
        forces = a.get_forces()
        energy = float(a.get_potential_energy())
        reason = stop_reason(a, energy, forces, s["min_distance"], s["max_force"])
        if reason is not None:
            dropped, last = dropped + 1, reason
            continue
        frames.append(frame(a, step, temperature, committee(calc, n_atoms)))
    note = None if not dropped else f"{dropped} of {s['steps']} samples dropped ({last})"
    return frames, s["steps"], note


def pool_frames(structures: list, calc, indices: list[int]):
    """(frames, count, None): the committee on each pool structure as is (``step`` is the
    structure's index in the seeds)."""
    frames = []
    for i, atoms in zip(indices, structures, strict=True):
        a = atoms.copy()
        a.calc = calc
        a.get_potential_energy()
        frames.append(frame(a, int(i), 0.0, committee(calc, len(a))))
    return frames, len(frames), None


def sample_task(url: str, iteration_id: int, specs: list[dict], model_ref: str,
                settings: dict) -> dict:
    """Trajectories ``specs`` (each: trajectory, seed, seed_structure_id, temperature,
    md_seed, sampler; for ``pool`` also ``members``: [(seed index, structure id)]) sampled
    one after another with ``model_ref`` (pulled once) and each written with its candidates;
    a trajectory already written is skipped. Returns ``{"trajectories": [summary per
    trajectory], "frames", "db_seconds"}``."""
    import os

    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    import torch

    from registry.active_learning.candidates import trajectories, write_trajectory
    from registry.core import Registry

    from ..training.calculator import NNPCalculator
    from .seeds import load_structures

    out, db = [], 0.0
    with Registry(url) as reg:
        t0 = time.perf_counter()
        done = {t["trajectory"]: t for t in trajectories(reg, iteration_id)}
        db += time.perf_counter() - t0  # bookkeeping: reads and writes of the campaign's rows
        for t in (done[sp["trajectory"]] for sp in specs if sp["trajectory"] in done):
            out.append({"trajectory": t["trajectory"], "frames": t["n_frames"],
                        "stop_reason": t["stop_reason"], "written": False})
        todo = [sp for sp in specs if sp["trajectory"] not in done]
        if not todo:
            return {"trajectories": out, "frames": 0, "db_seconds": db}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a small system: intra-op threads cost more than they give
        try:
            calc = NNPCalculator.from_registry(model_ref, registry=reg,
                                               device=settings.get("device", "cpu"))
            for spec in todo:
                t0 = time.perf_counter()
                kind = spec["sampler"]
                if kind == "pool":
                    idx = [i for i, _ in spec["members"]]
                    atoms = load_structures(reg, [sid for _, sid in spec["members"]])
                    frames, steps_done, reason = pool_frames(atoms, calc, idx)
                else:
                    atoms = load_structures(reg, [spec["seed_structure_id"]])[0]
                    run = md_frames if kind == "md" else nms_frames
                    frames, steps_done, reason = run(atoms, calc, settings,
                                                     spec["temperature"], spec["md_seed"])
                row = {**spec, "steps": settings["steps"] if kind != "pool" else len(frames),
                       "steps_done": steps_done, "stop_reason": reason,
                       "seconds": round(time.perf_counter() - t0, 3)}
                t1 = time.perf_counter()
                written = write_trajectory(reg, iteration_id, row, frames)
                db += time.perf_counter() - t1
                out.append({"trajectory": spec["trajectory"], "frames": len(frames),
                            "stop_reason": reason, "written": written,
                            "seconds": row["seconds"]})
        finally:
            torch.set_num_threads(threads)
    return {"trajectories": out, "frames": sum(o["frames"] for o in out if o["written"]),
            "db_seconds": db}
