"""Labelers over native ASE calculators: EMT (ASE) and GFN1/GFN2-xTB (tblite)."""

from __future__ import annotations

from importlib import metadata

from .base import Labeler, LabelFailure, charge_and_multiplicity, check_elements, level_dict

# tblite's xTB parametrisations cover H to Rn.
XTB_MAX_Z = 86
XTB_METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}


class EMTLabeler(Labeler):
    """ASE's effective-medium theory: fast and crude (metals; H, C, N, O for testing)."""

    def __init__(self):
        self.spec = "emt"
        self.level = level_dict("emt", "ase", metadata.version("ase"))

    def calculator(self):
        from ase.calculators.emt import EMT

        return EMT()

    def _compute(self, atoms):
        from ase.calculators.emt import parameters

        check_elements(atoms, parameters, "EMT")
        a = atoms.copy()
        a.calc = self.calculator()
        return a.get_potential_energy(), a.get_forces(apply_constraint=False)


class XTBLabeler(Labeler):
    """GFN2-xTB or GFN1-xTB through tblite: molecules and periodic cells, charge and
    multiplicity from ``atoms.info``."""

    def __init__(self, spec: str, max_iterations: int = 250):
        self.spec = spec
        self.max_iterations = int(max_iterations)
        self.level = level_dict(spec, "tblite", metadata.version("tblite"))

    def calculator(self, **params):
        from tblite.ase import TBLite

        return TBLite(method=XTB_METHODS[self.spec], verbosity=0,
                      max_iterations=self.max_iterations, **params)

    def _compute(self, atoms):
        if atoms.numbers.max(initial=0) > XTB_MAX_Z or atoms.numbers.min(initial=1) < 1:
            bad = [s for s, z in zip(atoms.get_chemical_symbols(), atoms.numbers, strict=True)
                   if not 1 <= z <= XTB_MAX_Z]
            raise LabelFailure(f"unsupported element {', '.join(sorted(set(bad)))} for "
                               f"{self.spec} (tblite covers H to Rn)")
        if atoms.pbc.any() and not atoms.pbc.all():
            raise LabelFailure(f"{self.spec}: cells periodic in only some directions are not "
                               f"supported by tblite (pbc={atoms.pbc.tolist()})")
        charge, mult = charge_and_multiplicity(atoms)
        a = atoms.copy()
        a.calc = self.calculator(charge=charge, multiplicity=mult)
        try:
            return a.get_potential_energy(), a.get_forces(apply_constraint=False)
        except Exception as exc:  # noqa: BLE001  (tblite reports SCF failures as errors)
            text = str(exc).strip()
            if "converge" in text.lower():
                raise LabelFailure(f"{self.spec}: SCF not converged in {self.max_iterations} "
                                   f"iterations ({text})") from exc
            raise
