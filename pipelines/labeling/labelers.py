"""``get_labeler(spec)``: the reference calculators by spec, each recording its level.

========================  ==========================================================
spec                      labeler
========================  ==========================================================
``emt``                   ASE effective-medium theory (energies, forces)
``gfn2-xtb``              GFN2-xTB through tblite (molecules and periodic cells)
``gfn1-xtb``              GFN1-xTB through tblite
``pyscf:XC/BASIS``        PySCF HF (``hf``) or any libxc functional: energies and
                          analytic forces, e.g. ``pyscf:wb97x/6-31g*``
``pyscf:ccsd(t)/BASIS``   PySCF RHF → CCSD(T) energies (``ccsd`` too), closed shells
========================  ==========================================================

This module is the one place that maps a level to its calculator:
:func:`pipelines.simulation.calculators.make_calculator` asks it.
"""

from __future__ import annotations

from registry.errors import BadInput

from .base import Labeler, LabelFailure

__all__ = ["LEVEL_SPECS", "SPECS", "Labeler", "LabelFailure", "get_labeler"]

# Specs whose text is also the registry level name they label at.
LEVEL_SPECS = {
    "emt": "ASE effective-medium theory (fast, crude; H, C, N, O supported for testing)",
    "gfn2-xtb": "GFN2-xTB through tblite",
    "gfn1-xtb": "GFN1-xTB through tblite",
}
SPECS = {
    **LEVEL_SPECS,
    "pyscf:XC/BASIS": "PySCF HF ('hf') or DFT energies and analytic forces, e.g. "
                      "pyscf:wb97x/6-31g*",
    "pyscf:ccsd(t)/BASIS": "PySCF RHF -> CCSD(T) energies (closed-shell molecules)",
}


def get_labeler(spec: str, **options) -> Labeler:
    """The labeler for ``spec`` (see the table above); ``options`` go to its constructor
    (e.g. ``max_cycle``, ``threads`` for PySCF; ``max_iterations`` for xTB).

    :class:`BadInput` for an unknown spec, functional or basis set, before any work.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise BadInput(f"a labeler spec must be non-empty text; available: {_available()}")
    text = " ".join(spec.strip().lower().split())
    try:
        if text == "emt":
            from .ase_backed import EMTLabeler

            return EMTLabeler(**options)
        if text in ("gfn2-xtb", "gfn1-xtb"):
            from .ase_backed import XTBLabeler

            return XTBLabeler(text, **options)
        if text.startswith("pyscf:"):
            return _pyscf(spec, text.removeprefix("pyscf:"), options)
    except TypeError as exc:  # an option the labeler does not take
        raise BadInput(f"labeler {spec!r}: {exc}") from None
    raise BadInput(f"unknown labeler spec {spec!r}; available: {_available()}")


def _pyscf(spec: str, rest: str, options: dict) -> Labeler:
    method, sep, basis = rest.partition("/")
    method, basis = method.strip(), basis.strip()
    if not sep or not method or not basis:
        raise BadInput(f"labeler spec {spec!r} must read pyscf:METHOD/BASIS, e.g. "
                       f"pyscf:wb97x/6-31g* or pyscf:ccsd(t)/cc-pvdz")
    from .pyscf_backed import CC_METHODS, CoupledClusterLabeler, PySCFLabeler

    if method in CC_METHODS:
        return CoupledClusterLabeler(method, basis, **options)
    return PySCFLabeler(method, basis, **options)


def _available() -> str:
    return ", ".join(SPECS)
