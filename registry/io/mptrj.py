"""MPtrj-style JSON (the Materials Project trajectory set of CHGNet): frames as
:class:`~registry.io.atoms.LightAtoms`.

Layout: ``{material_id: {frame_id: frame}}``, each frame a dict with ``structure`` (a pymatgen
``Structure.as_dict()``: ``lattice.matrix``, ``lattice.pbc``, ``charge``, ``sites`` with
``species[0].element`` and Cartesian ``xyz`` in Å), ``uncorrected_total_energy`` and
``corrected_total_energy`` (eV), ``force`` (eV/Å), ``stress`` (3x3, kBar, VASP's sign: positive
is compressive) and scalars (``energy_per_atom``, ``ef_per_atom``, ``bandgap``, ``mp_id``...).

Read as: ``energy`` = ``uncorrected_total_energy`` (the DFT energy; ``--energy-key
corrected_total_energy`` for the MP2020-corrected one), ``forces`` = ``force``, ``stress`` =
``-0.1 GPa`` x ``stress`` in eV/Å³ (ASE's sign), Voigt order. Every other value is kept in
the structure's info, with ``frame_id`` (per-site ``magmom`` is dropped). The file is parsed
whole with :mod:`json`: the full MPtrj, ~11 GB of text, needs several times its size in
memory, so split it first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from ..chem.elements import symbol_to_z
from ..errors import BadInput
from .atoms import LightAtoms

_SKIP = {"structure", "force", "stress", "magmom"}


def looks_like_mptrj(path: str) -> bool:
    """Whether a ``.json`` file starts like MPtrj (pymatgen structures under two levels of
    ids) rather than like an ASE JSON database."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    return b'"structure"' in head and b'"sites"' in head and b'"lattice"' in head


def frames(path: str) -> Iterator[tuple[str, LightAtoms]]:
    """(frame id, frame) for every frame of an MPtrj-style JSON file."""
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected an object of materials, got {type(data).__name__}")
    for material, trajectory in data.items():
        if not isinstance(trajectory, dict):
            raise BadInput(f"{path} material {material!r}: expected an object of frames")
        for frame_id, frame in trajectory.items():
            yield frame_id, _frame(path, frame_id, frame)


def _frame(path: str, frame_id: str, frame) -> LightAtoms:
    where = f"{path} frame {frame_id!r}"
    try:
        structure = frame["structure"]
        sites = structure["sites"]
        lattice = structure["lattice"]
        cell = np.asarray(lattice["matrix"], dtype=np.float64)
        positions = np.asarray([s["xyz"] for s in sites], dtype=np.float64).reshape(-1, 3)
        species = [s["species"] for s in sites]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{where}: not an MPtrj frame with a pymatgen structure ({exc!r})") \
            from None
    if any(len(sp) != 1 for sp in species):
        raise BadInput(f"{where}: a site with partial occupancy (several species)")
    try:
        numbers = np.array([symbol_to_z(sp[0]["element"]) for sp in species], dtype=np.int64)
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None
    info = {k: v for k, v in frame.items() if k not in _SKIP}
    info["frame_id"] = frame_id
    info["charge"] = structure.get("charge") or 0
    arrays = {}
    if "uncorrected_total_energy" in frame:
        info["energy"] = frame["uncorrected_total_energy"]
    if frame.get("force") is not None:
        arrays["forces"] = np.asarray(frame["force"], dtype=np.float64)
    if frame.get("stress") is not None:
        from ase.units import GPa

        s = -0.1 * GPa * np.asarray(frame["stress"], dtype=np.float64)
        if s.shape != (3, 3):
            raise BadInput(f"{where}: stress has shape {s.shape}, expected (3, 3)")
        info["stress"] = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    pbc = np.asarray(lattice.get("pbc", (True, True, True)), dtype=bool)
    return LightAtoms(numbers, positions, cell, pbc, info, arrays, {})
