"""Export stored structures and labels to extxyz, ASE ``.db`` or ANI HDF5 (by extension).

Key scheme: with one level exported, labels use the plain keys ASE reads as calculator
results (``energy``, ``forces``, ``dipole``, ``charges``, ``stress``; in HDF5 ``energies``,
``forces``, ``dipoles``, ``charges``, ``stresses``). With several, each key gets the suffix
``_<tag>``, where the tag is the level name with every run of characters other than
``a-z0-9`` replaced by ``_`` (``wb97x/6-31g*`` -> ``energy_wb97x_6_31g``). Re-ingest a level
with ``--energy-key energy_<tag>`` (forces etc. follow the energy key) and ``--skip-missing``
for structures without that level. Positions, cells and labels are written exactly (atoms
in the registry's canonical order), so ingest -> export -> ingest adds no rows. Per frame:
``charge`` / ``multiplicity`` (extxyz), ``total_charge`` / ``multiplicity`` (``.db``, HDF5).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..chem.elements import SYMBOLS
from ..chem.frames import FrameBatch
from ..errors import BadInput
from ..query.api import query_ids
from ..store.artifacts import sha256_file
from ..store.levels import level_ids as lookup_level_ids
from ..store.runs import run
from ..store.structures import iter_frames

FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "ase-db", ".h5": "ani-h5",
           ".hdf5": "ani-h5"}
_QUANTITIES = ("energy", "forces", "dipole", "charges", "stress")


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise BadInput(f"cannot export to {str(path)!r}: unknown extension {suffix or '(none)'!r}"
                       f"; use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def level_tag(level: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", level.lower()).strip("_")


def level_suffixes(levels: list[str]) -> dict[str, str]:
    """level -> key suffix: ``""`` for a single level, else ``"_<tag>"`` (tags must differ)."""
    if len(levels) == 1:
        return {levels[0]: ""}
    out, seen = {}, {}
    for lv in levels:
        tag = level_tag(lv)
        if tag in seen:
            raise BadInput(f"levels {seen[tag]!r} and {lv!r} map to the same export key suffix "
                           f"{tag!r}; export them separately with --level")
        seen[tag] = lv
        out[lv] = "_" + tag
    return out


def _frame_labels(batch: FrameBatch, i: int, suffixes: dict[str, str]):
    """(per-frame info, per-atom arrays) of frame i, keyed by the export scheme."""
    lo, hi = batch.offsets[i], batch.offsets[i + 1]
    info, arrays = {}, {}
    for level, sfx in suffixes.items():
        cols = batch.labels.get(level)
        if cols is None or not cols.present[i]:
            continue
        info["energy" + sfx] = float(cols.energy[i])
        for q in ("dipole", "stress"):
            arr = getattr(cols, q)
            if arr is not None and not np.isnan(arr[i]).all():
                info[q + sfx] = arr[i]
        for q in ("forces", "charges"):
            arr = getattr(cols, q)
            if arr is not None and not np.isnan(arr[lo:hi]).all():
                arrays[q + sfx] = arr[lo:hi]
    return info, arrays


def _has_cell(batch: FrameBatch, i: int) -> bool:
    return bool(batch.pbc[i].any() or batch.cells[i].any())


class ExtxyzWriter:
    def __init__(self, path: str, suffixes: dict[str, str]):
        self.fh = open(path, "w")  # noqa: SIM115  (closed in close())
        self.suffixes = suffixes

    def write(self, batch: FrameBatch) -> None:
        from .extxyz import format_frame

        out = []
        for i in range(len(batch)):
            lo, hi = batch.offsets[i], batch.offsets[i + 1]
            info, arrays = _frame_labels(batch, i, self.suffixes)
            if "stress" in info:  # ASE reads plain ``stress`` as a 3x3 matrix
                info["stress"] = _voigt_to_3x3(info["stress"])
            info["charge"] = int(batch.charge[i])
            info["multiplicity"] = int(batch.multiplicity[i])
            out.append(format_frame([SYMBOLS[z] for z in batch.numbers[lo:hi]],
                                    batch.positions[lo:hi],
                                    batch.cells[i] if _has_cell(batch, i) else None,
                                    batch.pbc[i], info, arrays))
        self.fh.write("".join(out))

    def close(self) -> None:
        self.fh.close()


def _voigt_to_3x3(v) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


class AseDbWriter:
    """Single level: a SinglePointCalculator (ASE's own keys); several: key-value pairs
    ``energy_<tag>`` and data arrays ``forces_<tag>`` etc."""

    def __init__(self, path: str, suffixes: dict[str, str]):
        import ase.db

        self.db = ase.db.connect(path, type="db", append=False, use_lock_file=False)
        self.suffixes = suffixes
        self.plain = list(suffixes.values()) == [""]

    def write(self, batch: FrameBatch) -> None:
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        with self.db:
            for i in range(len(batch)):
                lo, hi = batch.offsets[i], batch.offsets[i + 1]
                atoms = Atoms(numbers=batch.numbers[lo:hi], positions=batch.positions[lo:hi],
                              cell=batch.cells[i], pbc=batch.pbc[i])
                info, arrays = _frame_labels(batch, i, self.suffixes)
                kvp = {"total_charge": int(batch.charge[i]),
                       "multiplicity": int(batch.multiplicity[i])}
                data = {}
                if self.plain:
                    if info or arrays:
                        atoms.calc = SinglePointCalculator(atoms, **info, **arrays)
                else:
                    kvp.update({k: v for k, v in info.items() if k.startswith("energy")})
                    data.update({k: v for k, v in info.items() if not k.startswith("energy")})
                    data.update(arrays)
                self.db.write(atoms, key_value_pairs=kvp, data=data)

    def close(self) -> None:
        pass


def _writer(fmt: str, path: str, suffixes: dict[str, str]):
    if fmt == "extxyz":
        return ExtxyzWriter(path, suffixes)
    if fmt == "ase-db":
        return AseDbWriter(path, suffixes)
    from .hdf5 import AniH5Writer

    return AniH5Writer(path, suffixes)


def reingest_hint(path: str, suffixes: dict[str, str], fmt: str) -> dict[str, str]:
    """level -> the ``nnp ingest`` command that reads it back."""
    energy = "energies" if fmt == "ani-h5" else "energy"
    out = {}
    for level, sfx in suffixes.items():
        key = f" --energy-key {energy}{sfx}" if sfx else ""
        out[level] = f"nnp ingest {path} --level '{level}'{key} --skip-missing"
    return out


def _check_writable(path: str, tmp: str) -> None:
    """Create and remove ``tmp`` (beside ``path``): BadInput with the OS reason if the folder
    does not take new files (read-only, /proc, permissions)."""
    try:
        with open(tmp, "xb"):
            pass
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    os.remove(tmp)


def export(reg, path: str | os.PathLike, levels=None, *, overwrite: bool = False,
           chunk: int = 10000, on_progress=None, filter=None) -> dict:
    """Write the registry's structures (and ``ok`` labels of ``levels``, default all) to
    ``path``; one ``export`` run in provenance. The file appears only when complete.
    ``filter`` (OPTIMADE text or ``registry.query.Q``) keeps the matching structures only;
    its ``_nnp_energy``-like fields use the level when exactly one is given."""
    from sqlalchemy import func, select

    from ..store.schema import Label, Structure

    path = str(path)
    fmt = output_format(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BadInput(f"cannot export to {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise BadInput(f"cannot export to {path}: it is a directory")
    if os.path.exists(path) and not overwrite:
        raise BadInput(f"{path} exists; remove it or pass overwrite (--force)")
    with reg.session() as s:
        level_ids = lookup_level_ids(s, levels)
    ids = None if filter is None else query_ids(
        reg, filter, level=levels[0] if levels and len(levels) == 1 else None)
    suffixes = level_suffixes(list(level_ids)) if level_ids else {}
    with reg.session() as s:
        if levels:
            total = s.scalar(select(func.count(func.distinct(Label.structure_id))).where(
                Label.status == "ok", Label.level_id.in_(list(level_ids.values()))))
        else:
            total = s.scalar(select(func.count()).select_from(Structure))
    total = total if ids is None else min(total, len(ids))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.part{os.getpid()}{Path(path).suffix}")
    _check_writable(path, tmp)  # before the run row: a folder we cannot write records nothing
    params = {"path": path, "format": fmt, "levels": list(level_ids), "keys": suffixes,
              "filter": None if filter is None else str(filter)}
    with run(reg, "export", params) as rec:
        written = 0
        try:
            writer = _writer(fmt, tmp, suffixes)
            try:
                for batch in iter_frames(reg, list(level_ids), ids,
                                         labelled_only=bool(levels), chunk=chunk):
                    writer.write(batch)
                    written += len(batch)
                    if on_progress:
                        on_progress(written, total)
            finally:
                writer.close()
            os.replace(tmp, path)
        except OSError as exc:  # disk full, folder removed meanwhile...
            raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        sha, size = sha256_file(path)
        rec.produced("file", ref=path, sha256=sha, size=size, format=fmt)
        summary = {"path": path, "format": fmt, "structures": written,
                   "levels": {lv: {q: (("energies" if q == "energy" else
                                        {"dipole": "dipoles", "stress": "stresses"}.get(q, q))
                                       if fmt == "ani-h5" else q) + sfx
                                   for q in _QUANTITIES}
                              for lv, sfx in suffixes.items()},
                   "reingest": reingest_hint(path, suffixes, fmt), "sha256": sha,
                   "size_bytes": size, "run_id": rec.id}
        rec.result = {k: v for k, v in summary.items() if k != "reingest"}
    return summary
