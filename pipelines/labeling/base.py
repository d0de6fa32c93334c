"""What every labeler is: a spec, the level of theory it records, and ``label(atoms)``."""

from __future__ import annotations

import numpy as np


class LabelFailure(Exception):
    """A reference calculation gave no label; the message says why (SCF not converged,
    unsupported element, open shell, periodic cell, or the program's own error text)."""


def charge_and_multiplicity(atoms) -> tuple[int, int]:
    """(charge, spin multiplicity) as the registry reads them from ``atoms.info``.

    ``multiplicity``, else ``spin`` (unpaired electrons) + 1; without either the lowest one
    the electron count allows (1 for an even count, 2 for an odd one).
    """
    charge = int(atoms.info.get("charge", 0))
    if "multiplicity" in atoms.info:
        mult = int(atoms.info["multiplicity"])
    elif "spin" in atoms.info:
        mult = int(atoms.info["spin"]) + 1
    else:
        mult = 1 + (int(np.sum(atoms.numbers)) - charge) % 2
    n_electrons = int(np.sum(atoms.numbers)) - charge
    if mult < 1 or (n_electrons - (mult - 1)) % 2:
        raise LabelFailure(f"charge {charge} and multiplicity {mult} are inconsistent with "
                           f"{n_electrons} electrons")
    return charge, mult


class Labeler:
    """A reference calculator that records its level of theory.

    ``spec`` is what :func:`pipelines.labeling.get_labeler` was given; ``level`` is the
    registry level it labels at (``name``, ``method``, ``basis``, ``program``,
    ``program_version``, ``keywords``: the keyword arguments of ``Registry.add_level``), and
    ``properties`` what :meth:`label` returns besides ``None``. A labeler holds only plain
    settings (any program object is built per call), so it pickles into Dask tasks.
    """

    spec: str
    level: dict
    properties: tuple[str, ...] = ("energy", "forces")

    def label(self, atoms) -> dict:
        """``{"energy": eV, "forces": (n, 3) eV/Å or None}``; :class:`LabelFailure` on any
        failure."""
        try:
            energy, forces = self._compute(atoms)
        except LabelFailure:
            raise
        except Exception as exc:  # noqa: BLE001  (any program error is this label's failure)
            raise LabelFailure(f"{self.spec}: {type(exc).__name__}: {exc}".strip()) from exc
        if not np.isfinite(energy) or (forces is not None and not np.all(np.isfinite(forces))):
            raise LabelFailure(f"{self.spec}: the calculation returned a non-finite value")
        return {"energy": float(energy),
                "forces": None if forces is None else np.asarray(forces, float).reshape(-1, 3)}

    def labelled(self, atoms):
        """A copy of ``atoms`` carrying the label the way ingest reads it (``info['energy']``,
        ``arrays['forces']``); :class:`LabelFailure` on failure."""
        out = self.label(atoms)
        copy = atoms.copy()
        copy.calc = None
        copy.info["energy"] = out["energy"]
        copy.arrays.pop("forces", None)  # never leave another level's forces behind
        if out["forces"] is not None:
            copy.arrays["forces"] = out["forces"]
        return copy

    def ensure_level(self, reg) -> dict:
        """This labeler's level in ``reg`` (created on first use, with program and version)."""
        fields = {k: v for k, v in self.level.items() if k != "name"}
        return reg.ensure_level(self.level["name"], **fields)

    def calculator(self):
        """An ASE calculator computing the same energies and forces."""
        from .calculator import LabelerCalculator

        return LabelerCalculator(self)

    def _compute(self, atoms) -> tuple[float, np.ndarray | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def level_dict(name, program, program_version, keywords=None) -> dict:
    """The ``level`` of a labeler: method and basis parsed from the canonical ``name``."""
    from registry.store.levels import canonical_name, parse_name

    canon = canonical_name(name)
    method, basis = parse_name(canon)
    return {"name": canon, "method": method, "basis": basis, "program": program,
            "program_version": program_version, "keywords": keywords}


def check_elements(atoms, supported, what: str) -> None:
    """:class:`LabelFailure` naming the elements of ``atoms`` outside ``supported``."""
    missing = sorted(set(atoms.get_chemical_symbols()) - set(supported))
    if missing:
        raise LabelFailure(f"unsupported element{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)} for {what}")
