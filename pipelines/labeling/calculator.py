"""An ASE calculator over any labeler (for levels without a native ASE calculator)."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes


class LabelerCalculator(Calculator):
    """ASE calculator whose energy and forces are ``labeler.label(atoms)``.

    A failed calculation raises :class:`pipelines.labeling.LabelFailure`; asking for forces
    from an energy-only labeler (CCSD(T)) raises ``PropertyNotImplementedError``.
    """

    def __init__(self, labeler, **kwargs):
        self.labeler = labeler
        self.implemented_properties = ["energy", "free_energy", *labeler.properties[1:]]
        super().__init__(**kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if "forces" in properties and "forces" not in self.labeler.properties:
            raise PropertyNotImplementedError(f"{self.labeler.spec} gives energies only")
        out = self.labeler.label(self.atoms)
        self.results = {"energy": out["energy"], "free_energy": out["energy"]}
        if out["forces"] is not None:
            self.results["forces"] = out["forces"]
