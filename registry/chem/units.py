"""Unit conversion at ingest: energies to eV, forces to eV/Å (lengths are Å throughout)."""

from __future__ import annotations

from functools import cache

from ..errors import BadInput


@cache
def energy_units() -> dict[str, float]:
    """eV per unit, by lower-case name (ASE's CODATA constants; imported on first use, as
    importing ASE costs more than most ingests in eV need)."""
    from ase import units

    return {"ev": 1.0, "hartree": units.Hartree, "kcal/mol": units.kcal / units.mol,
            "kj/mol": units.kJ / units.mol}


def energy_factor(unit: str) -> float:
    """Multiply energies (and forces per Å) in ``unit`` by this to get eV."""
    if unit.lower() == "ev":
        return 1.0
    try:
        return energy_units()[unit.lower()]
    except KeyError:
        known = ", ".join(("eV", "hartree", "kcal/mol", "kJ/mol"))
        raise BadInput(f"unknown energy unit {unit!r}; known units: {known}") from None
