"""Reference calculators by level name (used for sampling and labeling)."""

from __future__ import annotations

CALCULATORS = {
    "emt": "ASE effective-medium theory (fast, crude; H, C, N, O supported for testing)",
    "gfn2-xtb": "GFN2-xTB through tblite",
    "gfn1-xtb": "GFN1-xTB through tblite",
}


def make_calculator(level: str):
    """An ASE calculator for ``level`` (a canonical level name)."""
    level = level.lower()
    if level == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if level in ("gfn2-xtb", "gfn1-xtb"):
        from tblite.ase import TBLite

        return TBLite(method={"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}[level],
                      verbosity=0)
    from registry.errors import BadInput

    raise BadInput(f"no reference calculator for level {level!r}; available: "
                   f"{', '.join(CALCULATORS)}")


def calculator_info(level: str) -> dict:
    """Program and version of the calculator behind ``level`` (for `levels add`)."""
    from importlib import metadata

    level = level.lower()
    if level == "emt":
        return {"program": "ase", "program_version": metadata.version("ase")}
    return {"program": "tblite", "program_version": metadata.version("tblite")}
