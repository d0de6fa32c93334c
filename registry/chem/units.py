"""Unit conversion at ingest: energies to eV, forces to eV/Å (lengths are Å throughout)."""

from __future__ import annotations

from functools import cache

from ..errors import BadInput


@cache
def _ase_units() -> dict[str, float]:
    """eV per non-eV unit, by lower-case name (ASE's CODATA constants; ASE is imported only
    here, as importing it costs more than most ingests in eV need)."""
    from ase import units

    return {"hartree": units.Hartree, "kcal/mol": units.kcal / units.mol,
            "kj/mol": units.kJ / units.mol}


def energy_factor(unit: str) -> float:
    """Multiply energies (and forces per Å) in ``unit`` by this to get eV."""
    key = unit.lower()
    if key == "ev":
        return 1.0
    try:
        return _ase_units()[key]
    except KeyError:
        known = ", ".join(("eV", "hartree", "kcal/mol", "kJ/mol"))
        raise BadInput(f"unknown energy unit {unit!r}; known units: {known}") from None
