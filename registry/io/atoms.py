"""ASE ``Atoms`` -> :class:`FrameBatch`, with labels read by key and converted to eV."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import BadInput
from ..frames import FrameBatch, LabelColumns
from ..units import energy_factor

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


def atoms_to_batch(frames: Iterable, level: str | None = None, *, units: str = "eV",
                   energy_key=None, forces_key=None, dipole_key=None, charges_key=None,
                   skip_missing: bool = False, source: str | None = None,
                   names: Iterable[str] | None = None) -> tuple[FrameBatch, int]:
    """Convert ``Atoms`` frames; returns the batch and the number of skipped frames.

    A frame lacking the energy (or a named key) is an error naming it, or skipped with
    ``skip_missing``. Energies and forces are multiplied by the ``units`` factor.
    """
    factor = energy_factor(units) if level else 1.0
    numbers, positions, counts, cells, pbcs, charge, mult = [], [], [], [], [], [], []
    energies, forces, dipoles, charges, infos, frame_names = [], [], [], [], [], []
    want = {"forces": forces_key, "dipole": dipole_key, "charges": charges_key}
    skipped = 0
    name_iter = iter(names) if names is not None else None
    for i, atoms in enumerate(frames):
        name = next(name_iter) if name_iter is not None else f"frame {i}"
        lab = {}
        if level:
            e = _value(atoms, energy_key, "energy", per_atom=False)
            f = _value(atoms, forces_key, "forces", per_atom=True)
            d = _value(atoms, dipole_key, "dipole", per_atom=False)
            q = _value(atoms, charges_key, "charges", per_atom=True)
            missing = [k for k, v in (("energy", e), *[(k, {"forces": f, "dipole": d,
                                                           "charges": q}[k])
                                                      for k, key in want.items() if key])
                       if v is None]
            if missing:
                if skip_missing:
                    skipped += 1
                    continue
                keys = {"energy": energy_key or "energy", **{k: v for k, v in want.items()}}
                raise BadInput(f"{name}: missing {', '.join(repr(keys[m]) for m in missing)} "
                               f"for level {level!r} (use --skip-missing to skip such frames)")
            try:
                lab["energy"] = float(np.asarray(e, dtype=float).reshape(())) * factor
            except (TypeError, ValueError):
                raise BadInput(f"{name}: energy {e!r} is not a number") from None
            lab["forces"] = None if f is None else _arr(f, (len(atoms), 3), name, "forces") \
                * factor
            lab["dipole"] = None if d is None else _arr(d, (3,), name, "dipole")
            lab["charges"] = None if q is None else _arr(q, (len(atoms),), name, "charges")
        numbers.append(atoms.numbers)
        positions.append(atoms.positions)
        counts.append(len(atoms))
        cells.append(np.asarray(atoms.cell.array, dtype=float))
        pbcs.append(np.asarray(atoms.pbc, dtype=bool))
        charge.append(int(round(atoms.info.get("charge", 0))))
        mult.append(int(atoms.info.get("multiplicity", atoms.info.get("spin", 0) + 1)
                        if "multiplicity" in atoms.info or "spin" in atoms.info else 1))
        energies.append(lab.get("energy"))
        forces.append(lab.get("forces"))
        dipoles.append(lab.get("dipole"))
        charges.append(lab.get("charges"))
        extra = {k: v for k, v in atoms.info.items()
                 if k not in _RESERVED_INFO and not _is_label_key(k)}
        infos.append(_jsonable(extra) or None)
        frame_names.append(name)
    if not counts:
        raise BadInput("no frames to ingest" + (f" ({skipped} skipped for missing keys)"
                                                 if skipped else " (empty input)"))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    batch = FrameBatch(
        numbers=np.concatenate(numbers).astype(np.int64),
        positions=np.concatenate(positions).astype(np.float64),
        offsets=offsets, cells=np.stack(cells), pbc=np.stack(pbcs),
        charge=np.asarray(charge), multiplicity=np.asarray(mult),
        sources=[source] * len(counts), infos=infos, frame_names=frame_names)
    if level:
        cols = {"energy": np.asarray(energies, dtype=float)}
        for key, vals, per_atom in (("forces", forces, True), ("dipole", dipoles, False),
                                    ("charges", charges, True)):
            if all(v is None for v in vals):
                continue
            if any(v is None for v in vals):
                bad = frame_names[next(j for j, v in enumerate(vals) if v is None)]
                raise BadInput(f"{bad}: has no {key} while other frames do")
            cols[key] = np.concatenate(vals) if per_atom else np.stack(vals)
        batch.labels[level] = LabelColumns(present=np.ones(len(counts), dtype=bool),
                                           source_unit=units, **cols)
    return batch, skipped


def _arr(value, shape, name, what):
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise BadInput(f"{name}: {what} have shape {arr.shape}, expected {shape}")
    return arr


def _is_label_key(key: str) -> bool:
    return key.split("_")[0] in ("energy", "forces", "dipole", "charges", "stress")


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, str | int | float | bool | list | type(None)):
            out[k] = v
    return out
