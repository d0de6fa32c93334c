"""Unit conversion at ingest: energies to eV, forces to eV/Å (lengths are Å throughout)."""

from __future__ import annotations

from ase import units

from ..errors import BadInput

ENERGY_UNITS = {
    "ev": 1.0,
    "hartree": units.Hartree,
    "kcal/mol": units.kcal / units.mol,
    "kj/mol": units.kJ / units.mol,
}


def energy_factor(unit: str) -> float:
    """Multiply energies (and forces per Å) in ``unit`` by this to get eV."""
    try:
        return ENERGY_UNITS[unit.lower()]
    except KeyError:
        known = ", ".join(("eV", "hartree", "kcal/mol", "kJ/mol"))
        raise BadInput(f"unknown energy unit {unit!r}; known units: {known}") from None
