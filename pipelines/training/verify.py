"""Verification checks of a registered model version, stored with it (as OpenKIM runs on its
models): :func:`verify` pulls the version through :class:`.calculator.NNPCalculator` (float64)
and runs, on a few small structures,

- ``forces``: forces equal −∇E, by central finite differences of the energy;
- ``invariance``: the energy is unchanged by a rotation, a translation and a permutation of
  like atoms (per atom);
- ``nve_drift``: the drift of the total energy in a short NVE run (velocity Verlet), per atom
  per ps;
- ``cutoff``: the energy and forces stay smooth as an atom crosses each cutoff of the model
  (``cutoff_energy_jump``: the change of energy between two steps that the forces do not
  account for; ``cutoff_force_jump``: the second difference of the forces along the scan).

Each check gives ``{"label", "value", "threshold", "passed", "unit", "details"}``; the version
passes when every check does. Thresholds (:data:`THRESHOLDS`) and run settings
(:data:`SETTINGS`) are documented in ``docs/verification.md`` and can be overridden per call.
The results are written with the version by ``Registry.record_verification`` inside a
``verify`` run that consumes the model version (and the dataset version whose test split gave
the structures). :func:`run_checks` runs the same checks on any ASE calculator.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np

from registry.errors import BadInput

# What a passing version must meet. Checks run in float64, where a consistent, smooth model
# is many orders of magnitude below each of these; a broken one (forces not the energy's
# gradient, a hard cutoff, a term depending on absolute positions or atom order) is above.
THRESHOLDS = {
    "forces_atol": 1e-3,          # eV/Å: |F − (−∇E)| allowed, plus...
    "forces_rtol": 1e-3,          # ... this fraction of the largest |force component|
    "invariance": 1e-6,           # eV/atom: |ΔE| under rotation, translation, permutation
    "nve_drift": 1e-2,            # eV/atom/ps: |slope| of the total energy in NVE
    "cutoff_energy_jump": 1e-5,   # eV: energy change between two scan steps not due to forces
    "cutoff_force_jump": 1e-3,    # eV/Å: second difference of the forces along the scan
}

SETTINGS = {
    "n_structures": 3,       # structures for the force and invariance checks
    "max_atoms": 64,         # dataset structures above this size are not picked
    "fd_atoms": 4,           # atoms displaced per structure for finite differences
    "fd_step": 1e-3,         # Å, central differences
    "nve_steps": 200,
    "timestep_fs": 0.5,
    "temperature_k": 300.0,
    "scan_step": 0.0025,     # Å between two positions of the moving atom
    "scan_width": 0.04,      # Å scanned on each side of a cutoff
}

LABELS = {
    "forces": ("forces vs −∇E", "eV/Å"),
    "invariance": ("energy invariance", "eV/atom"),
    "nve_drift": ("NVE energy drift", "eV/atom/ps"),
    "cutoff_energy_jump": ("energy jump at cutoff", "eV"),
    "cutoff_force_jump": ("force jump at cutoff", "eV/Å"),
}


def check_thresholds(thresholds) -> dict:
    """THRESHOLDS updated by ``thresholds`` (unknown names or non-positive values refused)."""
    out = dict(THRESHOLDS)
    for key, value in (thresholds or {}).items():
        if key not in THRESHOLDS:
            raise BadInput(f"unknown verification threshold {key!r}; known: "
                           f"{', '.join(THRESHOLDS)}")
        try:
            if isinstance(value, bool):
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"threshold {key} must be a number, got {value!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise BadInput(f"threshold {key} must be positive and finite, got {value!r}")
        out[key] = value
    return out


def check_settings(settings) -> dict:
    out = dict(SETTINGS)
    for key, value in (settings or {}).items():
        if key not in SETTINGS:
            raise BadInput(f"unknown verification setting {key!r}; known: {', '.join(SETTINGS)}")
        kind = type(SETTINGS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or value <= 0 or (kind is int and value != int(value)):
            raise BadInput(f"setting {key} must be a positive {kind.__name__}, got {value!r}")
        out[key] = kind(value)
    return out


# -- structures ------------------------------------------------------------------------------

def dataset_structures(mat, n: int, max_atoms: int, seed: int) -> list:
    """Up to ``n`` structures of the materialized version's test split (``max_atoms`` at
    most), picked by ``seed`` among them in the version's stable order."""
    from ase import Atoms

    pool = []
    for b in mat.buckets:
        for i in np.flatnonzero((b["split"] == 2) & (b["n_atoms"] <= max_atoms)):
            pool.append((b, int(i)))
    if not pool:
        return []
    rng = np.random.default_rng(seed)
    out = []
    for k in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False)):
        b, i = pool[k]
        m = int(b["n_atoms"][i])
        pbc = np.asarray(b["pbc"][i], dtype=bool)
        a = Atoms(numbers=b["numbers"][i, :m].astype(int), positions=b["positions"][i, :m],
                  cell=b["cell"][i] if pbc.any() else None, pbc=pbc)
        a.info["source"] = f"{mat.ref} structure {int(b['structure_id'][i])}"
        out.append(a)
    return out


def built_structures(elements: list[str], n: int, seed: int) -> list:
    """``n`` random compact clusters holding every element and at least one like pair
    (so that the permutation check applies), atoms 1.0 to 1.6 Å from their nearest one."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        symbols = list(elements) + [elements[k % len(elements)]] * (1 + k)
        pos = [np.zeros(3)]
        while len(pos) < len(symbols):
            base = pos[rng.integers(len(pos))]
            v = rng.normal(size=3)
            p = base + v / np.linalg.norm(v) * rng.uniform(1.0, 1.6)
            if min(np.linalg.norm(p - q) for q in pos) >= 1.0:
                pos.append(p)
        a = Atoms(symbols=symbols, positions=np.array(pos))
        a.info["source"] = f"built cluster {a.get_chemical_formula()}"
        out.append(a)
    return out


# -- the checks ------------------------------------------------------------------------------

def _energy(calc, atoms) -> float:
    a = atoms.copy()
    a.calc = calc
    return float(a.get_potential_energy())


def _energy_forces(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    return float(a.get_potential_energy()), np.array(a.get_forces(), dtype=float)


def _result(key: str, value, threshold: float, details: dict) -> dict:
    label, unit = LABELS[key]
    finite = value is not None and math.isfinite(value)
    return {"label": label, "value": float(value) if finite else None,
            "threshold": float(threshold), "passed": bool(finite and value <= threshold),
            "unit": unit, "details": details}


def forces_check(calc, structures, th: dict, st: dict, rng) -> dict:
    """max |F − (−∇E)| over the displaced components; allowed: atol + rtol · max |F|."""
    h = st["fd_step"]
    worst, scale, per = 0.0, 0.0, []
    for atoms in structures:
        _, f = _energy_forces(calc, atoms)
        n = len(atoms)
        idx = np.arange(n) if n <= st["fd_atoms"] else \
            np.sort(rng.choice(n, size=st["fd_atoms"], replace=False))
        err = 0.0
        for i in idx:
            for j in range(3):
                a = atoms.copy()
                a.positions[i, j] += h
                ep = _energy(calc, a)
                a.positions[i, j] -= 2 * h
                em = _energy(calc, a)
                err = max(err, abs(f[i, j] + (ep - em) / (2 * h)))
        per.append(err)
        worst = max(worst, err)
        scale = max(scale, float(np.abs(f).max()))
    threshold = th["forces_atol"] + th["forces_rtol"] * scale
    return _result("forces", worst, threshold,
                   {"per_structure": per, "max_abs_force": scale, "step": h,
                    "atol": th["forces_atol"], "rtol": th["forces_rtol"]})


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def invariance_check(calc, structures, th: dict, rng) -> dict:
    """max |ΔE| / n over a rotation (cell rotated too), a translation and a permutation of
    like atoms of each structure."""
    worst = {"rotation": 0.0, "translation": 0.0, "permutation": None}
    for atoms in structures:
        n = len(atoms)
        e0 = _energy(calc, atoms)
        rot = atoms.copy()
        q = _rotation(rng)
        com = rot.get_center_of_mass()
        rot.positions = (rot.positions - com) @ q.T + com
        if rot.cell.rank:
            rot.set_cell(np.asarray(rot.cell) @ q.T, scale_atoms=False)
        moved = atoms.copy()
        moved.positions += rng.uniform(-3.0, 3.0, size=3)
        for kind, a in (("rotation", rot), ("translation", moved)):
            worst[kind] = max(worst[kind], abs(_energy(calc, a) - e0) / n)
        zs, counts = np.unique(atoms.numbers, return_counts=True)
        like = zs[counts >= 2]
        if len(like):
            z = like[rng.integers(len(like))]
            where = np.flatnonzero(atoms.numbers == z)
            order = np.arange(n)
            order[where] = np.roll(where, 1)  # every atom of that element moves
            d = abs(_energy(calc, atoms[order]) - e0) / n
            worst["permutation"] = max(worst["permutation"] or 0.0, d)
    value = max(v for v in worst.values() if v is not None)
    return _result("invariance", value, th["invariance"], {**worst})


def nve_check(calc, atoms, th: dict, st: dict, seed: int) -> dict:
    """|slope| of the total energy of a velocity-Verlet run from ``temperature_k``
    Maxwell-Boltzmann velocities (momentum and, for molecules, rotation removed)."""
    from ase import units
    from ase.md import velocitydistribution as vd
    from ase.md.verlet import VelocityVerlet

    a = atoms.copy()
    a.calc = calc
    # thermalize_momenta is MaxwellBoltzmannDistribution's name from ASE 3.28
    thermalize = getattr(vd, "thermalize_momenta", vd.MaxwellBoltzmannDistribution)
    thermalize(a, temperature_K=st["temperature_k"], rng=np.random.default_rng(seed))
    vd.Stationary(a)
    if not a.pbc.any():
        vd.ZeroRotation(a)
    dt = st["timestep_fs"]
    md = VelocityVerlet(a, timestep=dt * units.fs)
    energies = [a.get_total_energy()]
    finite = True
    for _ in range(st["nve_steps"]):
        md.run(1)
        energies.append(a.get_total_energy())
        if not math.isfinite(energies[-1]):
            finite = False
            break
    n = len(a)
    e = np.array(energies)
    t_ps = np.arange(len(e)) * dt / 1000.0
    details = {"structure": atoms.info.get("source") or atoms.get_chemical_formula(),
               "n_atoms": n, "steps": st["nve_steps"], "timestep_fs": dt,
               "temperature_k": st["temperature_k"]}
    if not finite:
        return _result("nve_drift", None, th["nve_drift"],
                       {**details, "error": f"energy not finite after {len(e) - 1} steps"})
    slope = np.polyfit(t_ps, e, 1)[0] / n
    details.update(max_deviation_ev_per_atom=float(np.abs(e - e[0]).max() / n),
                   final_temperature_k=float(a.get_temperature()))
    return _result("nve_drift", abs(float(slope)), th["nve_drift"], details)


def cutoff_scans(calc, elements: list[str], cutoffs: list[float], st: dict) -> list[dict]:
    """Per cutoff and element: a trimer A (origin), B (1 Å behind A) and C moved along +x
    from ``cutoff − width`` to ``cutoff + width``: energies and forces at each step."""
    from ase import Atoms

    h, w = st["scan_step"], st["scan_width"]
    scans = []
    for rc in cutoffs:
        r = rc + np.arange(-round(w / h), round(w / h) + 1) * h
        for i, a_sym in enumerate(elements):
            c_sym = elements[(i + 1) % len(elements)]
            e, f = [], []
            for x in r:
                t = Atoms([a_sym, a_sym, c_sym], positions=[[0, 0, 0], [-1.0, 0, 0], [x, 0, 0]])
                ei, fi = _energy_forces(calc, t)
                e.append(ei)
                f.append(fi)
            scans.append({"cutoff": rc, "atoms": f"{a_sym}-{a_sym}-{c_sym}", "r": r,
                          "energy": np.array(e), "forces": np.array(f)})
    return scans


def cutoff_checks(scans: list[dict], th: dict, st: dict) -> tuple[dict, dict]:
    h = st["scan_step"]
    e_jump, f_jump, raw, where_e, where_f = 0.0, 0.0, 0.0, None, None
    finite = True
    for s in scans:
        e, f = s["energy"], s["forces"]
        if not (np.isfinite(e).all() and np.isfinite(f).all()):
            finite = False
            continue
        de = np.diff(e)
        # the moving atom C goes +h along x: dE = −F_Cx dx (trapezoid rule)
        resid = np.abs(de + 0.5 * (f[1:, 2, 0] + f[:-1, 2, 0]) * h)
        k = int(resid.argmax())
        if resid[k] > e_jump:
            e_jump, where_e = float(resid[k]), (s["atoms"], float(s["r"][k]), s["cutoff"])
        raw = max(raw, float(np.abs(de).max()))
        d2 = np.abs(f[2:] - 2 * f[1:-1] + f[:-2]).reshape(len(f) - 2, -1).max(axis=1)
        k = int(d2.argmax())
        if d2[k] > f_jump:
            f_jump, where_f = float(d2[k]), (s["atoms"], float(s["r"][k + 1]), s["cutoff"])
    common = {"cutoffs": sorted({s["cutoff"] for s in scans}),
              "scans": sorted({s["atoms"] for s in scans}), "step": h,
              "width": st["scan_width"]}

    def at(where):
        return None if where is None else {"atoms": where[0], "r": where[1],
                                           "cutoff": where[2]}

    energy = _result("cutoff_energy_jump", e_jump if finite else None,
                     th["cutoff_energy_jump"],
                     {**common, "max_step_change_ev": raw, "worst": at(where_e)})
    force = _result("cutoff_force_jump", f_jump if finite else None, th["cutoff_force_jump"],
                    {**common, "worst": at(where_f)})
    return energy, force


def run_checks(calc, structures: list, *, elements: list[str], cutoffs: list[float],
               thresholds=None, settings=None, seed: int = 0) -> dict:
    """Every check on ASE calculator ``calc``: ``{"passed", "checks": {name: result},
    "thresholds", "settings", "seed", "structures", "seconds"}``."""
    th, st = check_thresholds(thresholds), check_settings(settings)
    if not structures:
        raise BadInput("verification needs at least one structure")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    checks, seconds = {}, {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        seconds[name] = round(time.perf_counter() - t, 3)
        return out

    checks["forces"] = timed("forces", forces_check, calc, structures, th, st, rng)
    checks["invariance"] = timed("invariance", invariance_check, calc, structures, th, rng)
    biggest = max(structures, key=len)
    checks["nve_drift"] = timed("nve_drift", nve_check, calc, biggest, th, st, seed)
    scans = timed("cutoff", cutoff_scans, calc, elements,
                  sorted({float(c) for c in cutoffs}), st)
    checks["cutoff_energy_jump"], checks["cutoff_force_jump"] = cutoff_checks(scans, th, st)
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks,
            "thresholds": th, "settings": st, "seed": seed,
            "structures": [a.info.get("source") or a.get_chemical_formula()
                           for a in structures],
            "seconds": {**seconds, "total": round(time.perf_counter() - t0, 3)}}


# -- on a registered version -----------------------------------------------------------------

def model_cutoffs(info: dict) -> list[float]:
    """The cutoffs an atom crosses: the version's, and the ANI angular cutoff when stored."""
    cfg = info.get("config") or {}
    out = {float(c) for c in (info.get("cutoff"), cfg.get("radial_cutoff"),
                              cfg.get("angular_cutoff")) if c is not None}
    if not out:
        raise BadInput(f"model {info['ref']} has no cutoff to check smoothness at")
    return sorted(out)


def verify(reg, ref: str, *, structures=None, seed: int = 0, thresholds=None,
           settings=None, device: str = "cpu", record: bool = True) -> dict:
    """Run the checks on version ``ref`` and (``record``) store them with it.

    ``structures``: ASE Atoms to check on (default: ``n_structures`` of the model's dataset
    version's test split, else random clusters of the model's elements). Returns the stored
    record: ``{"ref", "passed", "checks", ...}`` plus ``run_id`` when recorded.
    """
    from registry.store.refs import check_int

    from .calculator import NNPCalculator
    from .device import resolve_device

    th, st = check_thresholds(thresholds), check_settings(settings)
    check_int(seed, "seed", 0, 2**32 - 1)
    info = reg.show_model(ref)
    ref = info["ref"]  # the version an alias points at now
    elements = list(info.get("elements") or (info.get("config") or {}).get("elements") or [])
    if not elements:
        raise BadInput(f"model {ref} lists no elements to build test structures from")
    cutoffs = model_cutoffs(info)
    source = "given"
    if structures is not None:
        from ase import Atoms

        structures = list(structures)
        if not all(isinstance(a, Atoms) and len(a) for a in structures):
            raise BadInput("structures must be non-empty ase.Atoms objects")
        if not structures:
            raise BadInput("structures is empty: give at least one, or none for the default")
        lacking = sorted({s for a in structures for s in a.get_chemical_symbols()}
                         - set(elements))
        if lacking:
            raise BadInput(f"model {ref} handles {', '.join(elements)}; the structures have "
                           f"{', '.join(lacking)}")
    # everything that can refuse (device, architecture, a Δ model...) is read before the run
    with warnings.catch_warnings():
        # verifying a version that failed before is how it gets another chance
        from registry.models.pull import FailedVerificationWarning

        warnings.simplefilter("ignore", FailedVerificationWarning)
        calc = NNPCalculator.from_registry(ref, registry=reg, device=resolve_device(device),
                                           dtype="float64")
    dv = info.get("dataset_version") if structures is None else None
    mat = None
    if dv is not None:
        mat = reg.materialize(dv["ref"])
        structures = dataset_structures(mat, st["n_structures"], st["max_atoms"], seed) or None
        source = f"{dv['ref']} test split"
    if structures is None:
        structures = built_structures(elements, st["n_structures"], seed)
        source, mat = "built from the model's elements", None
    params = {"model": ref, "seed": seed, "thresholds": th, "settings": st, "device": device}
    with (reg.run("verify", params) if record else nullcontext(_NoRun())) as run:
        if mat is not None:
            run.consumed("dataset_version", dv["id"], ref=dv["ref"], sha256=mat.hash)
        with _one_thread():
            out = run_checks(calc, structures, elements=elements, cutoffs=cutoffs,
                             thresholds=th, settings=st, seed=seed)
        out.update(source=source, dtype="float64", device=str(calc.device))
        if not record:
            return {**out, "ref": ref}
        out = reg.record_verification(ref, out, run=run)
        run.result = {"model": ref, "passed": out["passed"],
                      "failed": [k for k, c in out["checks"].items() if not c["passed"]]}
    return out


@contextmanager
def _one_thread():
    """One torch thread while checking: the structures are a few atoms, too small to share
    out, and extra threads only contend with other work on the machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class _NoRun:
    """Stands in for a run when nothing is recorded."""

    def consumed(self, *args, **kwargs) -> None:
        pass
