"""ASE ``Atoms`` -> :class:`FrameBatch`, with labels read by key and converted to eV."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..chem.frames import INT16_MAX, FrameBatch, LabelColumns, concat, whole_number_problem
from ..chem.units import energy_factor
from ..errors import BadInput

_RESERVED_INFO = {"energy", "free_energy", "stress", "dipole", "charge", "spin",
                  "multiplicity", "pbc", "Lattice", "Properties", "config_type_"}


def _value(atoms, key: str | None, default: str, per_atom: bool):
    """Look up ``key`` in info/arrays, else (default key) in the calculator's results."""
    store = atoms.arrays if per_atom else atoms.info
    if key is not None:
        return store.get(key)
    if default in store:
        return store[default]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    return results.get(default)


class _Cell:
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


class _Results:
    __slots__ = ("results",)

    def __init__(self, results):
        self.results = results


class LightAtoms:
    """The parts of an ASE ``Atoms`` that :func:`atoms_to_batches` reads (numbers, positions,
    cell, pbc, info, per-atom arrays, calculator results), for readers that build no
    ``Atoms``: making one costs about as much as the C parser spends on a small molecule."""

    __slots__ = ("numbers", "positions", "cell", "pbc", "info", "arrays", "calc")

    def __init__(self, numbers, positions, cell, pbc, info: dict, arrays: dict,
                 results: dict):
        self.numbers, self.positions = numbers, positions
        self.cell, self.pbc = _Cell(cell), pbc
        self.info, self.arrays, self.calc = info, arrays, _Results(results)

    def __len__(self) -> int:
        return len(self.numbers)


_PLURAL = {"forces": "forces", "dipole": "dipoles", "charges": "charges", "stress": "stresses"}


def companion_key(energy_key: str | None, quantity: str) -> str | None:
    """Default key of ``quantity`` given the energy key: ``energy_wb97x`` -> ``forces_wb97x``,
    ``wb97x.energy`` -> ``wb97x.forces``, ``energies_x`` -> ``forces_x`` (HDF5 plurals).

    None means the plain default (``forces`` in arrays/info or the attached calculator).
    """
    if not energy_key:
        return None
    if "energies" in energy_key:
        key = energy_key.replace("energies", _PLURAL[quantity], 1)
    elif "energy" in energy_key:
        key = energy_key.replace("energy", quantity, 1)
    else:
        return None
    return None if key == quantity else key


def _voigt(value) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape == (3, 3):
        return arr[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return arr


def atoms_to_batches(frames: Iterable, level: str | None = None, *, units: str = "eV",
                     energy_key=None, forces_key=None, dipole_key=None, charges_key=None,
                     stress_key=None, skip_missing: bool = False, source: str | None = None,
                     names: Iterable[str] | None = None,
                     allow_empty: bool = False) -> tuple[list[FrameBatch], int]:
    """Convert ``Atoms`` frames; returns batches (one per set of quantities present, e.g.
    crystals with stress apart from molecules without) and the number of skipped frames.
    No frames (all skipped, or none given) is an error unless ``allow_empty`` (for one chunk
    of a file read in chunks): then no batches.

    A frame lacking the energy (or an explicitly named key) is an error naming it, or
    skipped with ``skip_missing``. Keys not named default to the energy key's companions
    (:func:`companion_key`), which are optional. Energies, forces and stress are multiplied
    by the ``units`` factor.
    """
    factor = energy_factor(units) if level else 1.0
    numbers, positions, counts, cells, pbcs, charge, mult = [], [], [], [], [], [], []
    energies, forces, dipoles, charges, stresses = [], [], [], [], []
    infos, frame_names = [], []
    explicit = {"forces": forces_key, "dipole": dipole_key, "charges": charges_key,
                "stress": stress_key}
    keys = {q: (k if k else companion_key(energy_key, q)) for q, k in explicit.items()}
    skipped = 0
    name_iter = iter(names) if names is not None else None
    for i, atoms in enumerate(frames):
        name = next(name_iter) if name_iter is not None else f"frame {i}"
        lab = {}
        if level:
            e = _value(atoms, energy_key, "energy", per_atom=False)
            vals = {q: _value(atoms, keys[q], q, per_atom=q in ("forces", "charges"))
                    for q in explicit}
            missing = ([energy_key or "energy"] if e is None else []) + [
                k for q, k in explicit.items() if k and vals[q] is None]
            if missing:
                if skip_missing:
                    skipped += 1
                    continue
                raise BadInput(f"{name}: missing {', '.join(repr(k) for k in missing)} "
                               f"for level {level!r} (use --skip-missing to skip such frames)")
            try:
                lab["energy"] = float(np.asarray(e, dtype=float).reshape(())) * factor
            except (TypeError, ValueError):
                raise BadInput(f"{name}: energy {e!r} is not a number") from None
            f, d, q, st = (vals[k] for k in ("forces", "dipole", "charges", "stress"))
            lab["forces"] = None if f is None else _arr(f, (len(atoms), 3), name, "forces") \
                * factor
            lab["dipole"] = None if d is None else _arr(d, (3,), name, "dipole")
            lab["charges"] = None if q is None else _arr(q, (len(atoms),), name, "charges")
            lab["stress"] = None if st is None else _arr(_voigt(st), (6,), name, "stress") \
                * factor
        numbers.append(atoms.numbers)
        positions.append(atoms.positions)
        counts.append(len(atoms))
        cells.append(np.asarray(atoms.cell.array, dtype=float))
        pbcs.append(np.asarray(atoms.pbc, dtype=bool))
        charge.append(_charge(atoms.info, name))
        mult.append(_multiplicity(atoms.info, name))
        energies.append(lab.get("energy"))
        forces.append(lab.get("forces"))
        dipoles.append(lab.get("dipole"))
        charges.append(lab.get("charges"))
        stresses.append(lab.get("stress"))
        infos.append(_extra_info(atoms.info) or None)
        frame_names.append(name)
    if not counts:
        if allow_empty:
            return [], skipped
        raise BadInput("no frames to ingest" + (f" ({skipped} skipped for missing keys)"
                                                 if skipped else " (empty input)"))
    cols = {"forces": forces, "dipole": dipoles, "charges": charges, "stress": stresses}
    groups: dict[tuple, list[int]] = {}
    for i in range(len(counts)):
        sig = tuple(q for q, vals in cols.items() if vals[i] is not None)
        groups.setdefault(sig, []).append(i)
    batches = []
    for sig, idx in groups.items():
        batch = FrameBatch(
            numbers=np.concatenate([numbers[i] for i in idx]).astype(np.int64),
            positions=np.concatenate([positions[i] for i in idx]).astype(np.float64),
            offsets=np.concatenate([[0], np.cumsum([counts[i] for i in idx])]).astype(np.int64),
            cells=np.stack([cells[i] for i in idx]), pbc=np.stack([pbcs[i] for i in idx]),
            charge=np.asarray([charge[i] for i in idx]),
            multiplicity=np.asarray([mult[i] for i in idx]),
            sources=[source] * len(idx), infos=[infos[i] for i in idx],
            frame_names=[frame_names[i] for i in idx])
        if level:
            arrays = {"energy": np.asarray([energies[i] for i in idx], dtype=float)}
            for q in sig:
                vals = [cols[q][i] for i in idx]
                arrays[q] = np.concatenate(vals) if q in ("forces", "charges") else \
                    np.stack(vals)
            batch.labels[level] = LabelColumns(present=np.ones(len(idx), dtype=bool),
                                               source_unit=units, **arrays)
        batches.append(batch)
    return batches, skipped


def atoms_to_batch(frames: Iterable, level: str | None = None, **kwargs) -> tuple[FrameBatch,
                                                                                   int]:
    """Like :func:`atoms_to_batches`, as one batch: quantities that only some frames carry
    (e.g. stress on crystals only) are masked per frame (``LabelColumns.masks``)."""
    batches, skipped = atoms_to_batches(frames, level, **kwargs)
    return concat(batches), skipped


def _whole(info: dict, key: str, name: str, lo: int, hi: int, hint: str = "") -> int:
    """``info[key]`` as an int, or BadInput naming the frame: values are never rounded."""
    value = info[key]
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    problem = whole_number_problem(value, key, lo, hi)
    if problem:
        raise BadInput(f"{name}: {problem}{hint}")
    return int(value)


def _charge(info: dict, name: str) -> int:
    if "charge" not in info:
        return 0
    return _whole(info, "charge", name, -INT16_MAX - 1, INT16_MAX)


def _multiplicity(info: dict, name: str) -> int:
    """Spin multiplicity from ``multiplicity``, else ``spin`` (unpaired electrons, 2S) + 1."""
    if "multiplicity" in info:
        return _whole(info, "multiplicity", name, 1, INT16_MAX)
    if "spin" in info:
        return 1 + _whole(info, "spin", name, 0, INT16_MAX - 1,
                          hint=" ('spin' is read as the number of unpaired electrons, 2S; "
                               "the multiplicity is spin + 1)")
    return 1


def _arr(value, shape, name, what):
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise BadInput(f"{name}: {what} have shape {arr.shape}, expected {shape}")
    return arr


_LABEL_PREFIXES = frozenset({"energy", "forces", "dipole", "charges", "stress"})
_PLAIN = (str, int, float, bool, list, type(None))


def _extra_info(info: dict) -> dict:
    """The frame's info kept with the structure: JSON values of keys that are neither
    reserved nor labels (``energy_*``, ``forces_*``...)."""
    out = {}
    for k, v in info.items():
        if k in _RESERVED_INFO or k.partition("_")[0] in _LABEL_PREFIXES:
            continue
        if type(v) not in _PLAIN:  # the usual scalars pass without the checks below
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            if not isinstance(v, _PLAIN):
                continue
        out[k] = v
    return out
