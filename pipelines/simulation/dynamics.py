"""Langevin MD with a registered model: ``nnp md`` and the demo's production run.

:func:`run_md` checks everything before any work (the settings, the output path, the
structure file, that the model exists, is an ANI ensemble and handles every element of the
structure); a refusal is a :class:`BadInput` and nothing is written. It then runs ASE's
Langevin integrator with :class:`pipelines.training.calculator.NNPCalculator` (the ensemble
mean) inside one ``md`` run in provenance that consumes the model version and the structure
file (with its sha256) and produces the trajectory file (with its sha256).

Frames (step 0, then every ``interval`` steps) are appended to a temporary file beside the
output, which is renamed onto it when the run ends, however it ends: a finished run, an early
stop, Ctrl-C or an error all leave a valid extxyz file holding the frames reached. Each frame
carries the ensemble-mean ``energy`` and ``forces`` (read back by ASE as its calculator
results), the members' ``energy_std`` and the ``step``, ``time_fs`` and ``temperature_K`` in
its info, and the momenta, so a frame can restart a run.

Early stop: before each step's frame is kept, the atoms are checked for a pair closer than
``min_distance`` (Å, minimum image in periodic cells), a force above ``max_force`` (eV/Å, the
norm on one atom) and a non-finite energy or force. A failed check ends the run as ``ok``
with ``stop_reason`` set, the offending frame written last (its info has ``stop_reason``):
the frames before it are a valid trajectory, and the stop is what the settings asked for.

Ctrl-C raises :class:`MDInterrupted` (a ``KeyboardInterrupt``) carrying the summary; the run is
recorded ``interrupted`` with the trajectory written so far as its output.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from registry.errors import BadInput

FORMAT = "extxyz"


@dataclass
class MDSettings:
    """What ``nnp md`` asks for; units: K, fs, 1/fs, Å, eV/Å."""

    steps: int
    temperature_k: float
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    seed: int = 0
    min_distance: float = 0.5  # 0: no check
    max_force: float = 50.0  # 0: no check
    interval: int = 10

    def check(self) -> MDSettings:
        from registry.store.refs import check_int

        check_int(self.steps, "--steps", 1, 10**9)
        check_int(self.interval, "--interval", 1, 10**9)
        check_int(self.seed, "--seed", 0, 2**32 - 2)
        for name, value, zero, top in (
                ("--temperature", self.temperature_k, True, 1e5),
                ("--timestep", self.timestep_fs, False, 100.0),
                ("--friction", self.friction_per_fs, True, 1e3),
                ("--min-distance", self.min_distance, True, 10.0),
                ("--max-force", self.max_force, True, None)):
            ok = isinstance(value, int | float) and not isinstance(value, bool) \
                and np.isfinite(value) and (value >= 0 if zero else value > 0)
            if not ok:
                raise BadInput(f"{name} must be a finite number {'>= 0' if zero else '> 0'}, "
                               f"got {value!r}")
            if top is not None and value > top:
                raise BadInput(f"{name} {value} is beyond {top:g}")
        return self


@dataclass
class MDResult:
    """What a run did: ``steps_done`` of ``steps``, ``frames`` written to ``output``."""

    model: str
    run_id: int
    output: str
    steps: int
    steps_done: int
    frames: int
    last_step_written: int | None
    stop_reason: str | None
    mean_energy_std_ev: float | None
    max_energy_std_ev: float | None
    seconds: float
    sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class MDInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_md`; ``result`` says what was written."""

    def __init__(self, result: MDResult):
        super().__init__(f"{result.last_step_written or 0} of {result.steps} steps written "
                         f"to {result.output}")
        self.result = result


class _Stop(Exception):  # noqa: N818  (a state, not a fault)
    pass


def read_structure(path) -> object:
    """The first frame of ``path`` (any format ASE reads) as ``ase.Atoms``."""
    import ase.io

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"--structure {str(p)!r}: no such file")
    try:
        atoms = ase.io.read(p, index=0)
    except Exception as exc:  # noqa: BLE001  (ASE raises many kinds for an unreadable file)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"--structure {str(p)!r}: ASE cannot read it ({text})") from None
    if len(atoms) == 0:
        raise BadInput(f"--structure {str(p)!r} holds no atoms")
    if not np.isfinite(atoms.positions).all():
        raise BadInput(f"--structure {str(p)!r} has non-finite positions")
    if atoms.pbc.any():
        cell = np.asarray(atoms.cell)
        if abs(np.linalg.det(cell)) < 1e-9 and atoms.pbc.all():
            raise BadInput(f"--structure {str(p)!r} is periodic but its cell has no volume")
    return atoms


def check_elements(atoms, elements: list[str], model_ref: str) -> None:
    """:class:`BadInput` naming the elements of ``atoms`` that the model lacks."""
    from registry.chem.elements import SYMBOLS, symbol_to_z

    have = {symbol_to_z(s) for s in elements}
    lacking = sorted(set(int(z) for z in atoms.numbers) - have)
    if lacking:
        raise BadInput(f"model {model_ref} handles {', '.join(elements)}; the structure has "
                       f"{', '.join(SYMBOLS[z] for z in lacking)}")


def check_output(output, structure=None, overwrite: bool = False) -> Path:
    out = Path(output)
    if out.suffix.lower() not in (".extxyz", ".xyz"):
        raise BadInput(f"-o {str(out)!r}: the trajectory is extxyz; name it *.extxyz or *.xyz")
    if not out.parent.is_dir():
        raise BadInput(f"-o {str(out)!r}: no such directory {str(out.parent)!r}")
    if out.is_dir():
        raise BadInput(f"-o {str(out)!r} is a directory")
    if structure is not None and out.exists() and out.resolve() == Path(structure).resolve():
        raise BadInput(f"-o {str(out)!r} is the input structure file")
    if out.exists() and not overwrite:
        raise BadInput(f"-o {str(out)!r} exists; pass --force to overwrite it")
    return out


def load_calculator(reg, model_ref: str, device: str = "cpu", dtype: str = "float32"):
    """(calculator, model version info) for ``model_ref``, pulled hash-verified."""
    from pipelines.training.archs import check_model_arch
    from pipelines.training.calculator import NNPCalculator

    pulled = reg.pull_model(model_ref)
    check_model_arch(pulled, "md")
    from pipelines.training.torch_io import load_state_dicts

    calc = NNPCalculator(pulled.config, load_state_dicts(pulled), name=pulled.ref,
                         device=device, dtype=dtype)
    return calc, pulled.info


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_md(reg, model_ref: str, structure, output, settings: MDSettings, *,
           calculator=None, overwrite: bool = False, device: str = "cpu",
           on_step=None) -> MDResult:
    """Run Langevin MD of the first frame of ``structure`` (a file) with ``model_ref``.

    ``calculator``: an :class:`NNPCalculator` already built for ``model_ref`` (e.g. by
    ``NNPCalculator.from_registry``); by default the model is pulled here. ``on_step(step,
    steps, info)`` is called after every step (``info``: energy, energy_std, temperature).
    Raises :class:`MDInterrupted` on Ctrl-C, after the trajectory is written and the run
    recorded. See the module docstring for what is written and recorded.
    """
    import time

    settings.check()
    out = check_output(output, structure, overwrite)
    atoms = read_structure(structure)
    if calculator is None:
        calculator, info = load_calculator(reg, model_ref, device=device)
    else:
        info = reg.show_model(calculator.model_ref or model_ref)
    ref = f"{info['name']}:{info['version']}"
    check_elements(atoms, list(calculator.config["elements"]), ref)
    structure = Path(structure)
    params = {"model": ref, "structure": str(structure), "output": str(out),
              **asdict(settings)}
    t0 = time.perf_counter()
    result = None
    try:
        with reg.run("md", params) as run:
            run.consumed("model_version", info["id"], ref=ref,
                         sha256=info.get("content_hash"))
            run.consumed("file", ref=str(structure), sha256=file_sha256(structure),
                         size=structure.stat().st_size, kind="md start structure")
            md = _Integrator(atoms, calculator, settings, on_step)
            result = MDResult(model=ref, run_id=run.id, output=str(out),
                              steps=settings.steps, steps_done=0, frames=0,
                              last_step_written=None, stop_reason=None,
                              mean_energy_std_ev=None, max_energy_std_ev=None, seconds=0.0)
            writer = _AtomicWriter(out)
            try:
                with _torch_threads(calculator, len(atoms)):
                    md.run(writer, result)
            except KeyboardInterrupt:
                result.stop_reason = "interrupted"
                raise
            finally:  # whatever ended the run, the frames reached are kept and recorded
                writer.commit()
                result.seconds = round(time.perf_counter() - t0, 3)
                result.frames = writer.frames
                result.last_step_written = writer.last_step
                result.mean_energy_std_ev, result.max_energy_std_ev = md.std_summary()
                if writer.frames:
                    result.sha256 = file_sha256(out)
                    run.produced("file", ref=str(out), sha256=result.sha256,
                                 size=out.stat().st_size, format=FORMAT,
                                 frames=writer.frames)
                run.result = {k: v for k, v in result.to_dict().items()
                              if k not in ("model", "run_id", "output", "sha256")}
    except KeyboardInterrupt:
        if result is None:
            raise
        # the run is closed (as interrupted, with the trajectory as its output) by now
        raise MDInterrupted(result) from None
    return result


SMALL_SYSTEM = 1000  # atoms; below this a CPU step runs on one torch thread


@contextmanager
def _torch_threads(calculator, n_atoms: int):
    """One torch thread for a small system on CPU: a step's tensors are tiny, and torch's
    intra-op threads then cost more than they give (tenfold on a busy 2-core machine)."""
    import torch

    if str(getattr(calculator, "device", "cpu")) != "cpu" or n_atoms >= SMALL_SYSTEM:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _AtomicWriter:
    """Appends frames to a temporary file beside ``path``; :meth:`commit` renames it onto
    ``path`` (nothing at ``path`` changes until then)."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115  (closed in commit)
        self.frames = 0
        self.last_step: int | None = None

    def write(self, frame, step: int) -> None:
        import ase.io

        ase.io.write(self.fh, frame, format=FORMAT)
        self.fh.flush()
        self.frames += 1
        self.last_step = step

    def commit(self) -> None:
        if self.fh.closed:
            return
        self.fh.close()
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class _Integrator:
    def __init__(self, atoms, calculator, settings: MDSettings, on_step):
        self.settings = settings
        self.on_step = on_step
        self.atoms = atoms.copy()
        self.atoms.calc = calculator
        self.stds: list[float] = []

    def std_summary(self) -> tuple[float | None, float | None]:
        if not self.stds:
            return None, None
        return float(np.mean(self.stds)), float(np.max(self.stds))

    def run(self, writer: _AtomicWriter, result: MDResult) -> None:
        from ase import units
        from ase.constraints import FixCom
        from ase.md import velocitydistribution as vd
        from ase.md.langevin import Langevin

        s, atoms = self.settings, self.atoms
        rng = np.random.default_rng(s.seed)
        # Maxwell-Boltzmann momenta (thermalize_momenta is its name from ASE 3.28)
        thermalize = getattr(vd, "thermalize_momenta", vd.MaxwellBoltzmannDistribution)
        thermalize(atoms, temperature_K=s.temperature_k, rng=rng)
        # FixCom rather than Langevin's fixcm (deprecated: it biases small systems)
        atoms.set_constraint(FixCom())
        dyn = Langevin(atoms, s.timestep_fs * units.fs, temperature_K=s.temperature_k,
                       friction=s.friction_per_fs / units.fs, fixcm=False, rng=rng)
        for _ in dyn.irun(s.steps):
            step = dyn.nsteps
            frame, reason = self._frame(step)
            result.steps_done = step
            if reason is not None:
                frame.info["stop_reason"] = reason
                writer.write(frame, step)
                result.stop_reason = reason
                return
            if step % s.interval == 0 or step == s.steps:
                writer.write(frame, step)
            if self.on_step is not None:
                self.on_step(step, s.steps, {k: frame.info[k] for k in
                                             ("energy_std", "temperature_K")})

    def _frame(self, step: int):
        """A copy of the atoms with the step's results, and why to stop (or None)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms, s = self.atoms, self.settings
        calc = atoms.calc
        # the model's forces: get_forces() would apply FixCom's mass-weighted projection
        forces = atoms.get_forces(apply_constraint=False)
        energy = float(atoms.get_potential_energy())
        std = float(calc.results.get("energy_std", 0.0))
        frame = atoms.copy()
        frame.set_constraint()
        frame.info = {"step": step, "time_fs": round(step * s.timestep_fs, 9),
                      "energy_std": std, "temperature_K": float(atoms.get_temperature()),
                      "model": calc.model_ref}
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces.copy())
        if np.isfinite(std):
            self.stds.append(std)
        return frame, self._stop_reason(frame, energy, forces)

    def _stop_reason(self, frame, energy: float, forces) -> str | None:
        s = self.settings
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            return "non-finite energy or forces"
        # a close pair first: it is the cause of the huge forces that come with it
        if s.min_distance > 0 and len(frame) > 1:
            pair = closest_pair(frame, s.min_distance)
            if pair is not None:
                i, j, d = pair
                return (f"atoms {i} ({frame[i].symbol}) and {j} ({frame[j].symbol}) are "
                        f"{d:.3f} Å apart, closer than --min-distance {s.min_distance:g} Å")
        if s.max_force > 0:
            norms = np.linalg.norm(forces, axis=1)
            i = int(np.argmax(norms))
            if norms[i] > s.max_force:
                return (f"force {norms[i]:.3g} eV/Å on atom {i} ({frame[i].symbol}) exceeds "
                        f"--max-force {s.max_force:g} eV/Å")
        return None


def closest_pair(atoms, cutoff: float):
    """(i, j, distance) of the closest pair nearer than ``cutoff`` (minimum image where
    periodic; an atom and its own image count), or None."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])
