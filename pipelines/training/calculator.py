"""An ASE calculator for a registered ensemble: ``NNPCalculator.from_registry(REF)``.

The version is pulled hash-verified (safetensors only, never pickle), its members rebuilt from
the stored config (:func:`.potential.potential`: for ANI torchani's builders, one AEV
computation shared by every member), the same energy model the version's TorchScript export
holds. Results, in eV and Å:

- ``energy`` / ``free_energy``: the ensemble mean, the level's atomic reference energies
  (``reference_energies_ev``, subtracted in training) added back;
- ``forces`` (n, 3): the mean of the members' −∂E/∂x;
- ``stress`` (Voigt, 6) for cells periodic in all three directions: (1/V) ∂E/∂ε of the mean
  energy, by the strain derivative (torchani's "scaling" route);
- ``energy_std``: the members' standard deviation of the energy (unbiased, 0 for one member),
  ``energies``: each member's energy; ``forces_std`` (n, 3): the same per force component,
  computed when asked for (``calc.get_property("forces_std", atoms)``): it takes a backward
  pass per member, where ``forces`` alone take one.

A Δ model (trained on a ``--delta HIGH-LOW`` dataset version) predicts HIGH − LOW; its config
names the base level (``base_level``: LOW), and the calculator adds that level's energy,
forces and stress from its reference calculator
(:func:`pipelines.simulation.calculators.make_calculator`: EMT, GFN2-xTB/GFN1-xTB through
tblite), so every result above is a HIGH total; ``base_energy`` and ``delta_energy`` hold the
two parts. A base level without a calculator is refused when the calculator is built.

Neighbours (ANI): :func:`.neighbors.neighbor_pairs`, torchani's linear-scaling cell list for
periodic systems from 190 atoms (slabs and wires too, in a closed cell with vacuum) and for
molecules from 1770, all pairs below; time and memory grow linearly with the number of atoms
(benchmarks/calculator.py, docs/performance.md).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from registry.errors import BadInput


class NNPCalculator(Calculator):
    """ASE calculator over the members of a registered ANI or HIP-NN model version."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std",
                              "forces_std", "energies", "base_energy", "delta_energy"]

    def __init__(self, config: dict, members: list[dict], *, name: str | None = None,
                 device: str = "cpu", dtype: str = "float32", **kwargs):
        import torch

        super().__init__(**kwargs)
        from .archs import ARCHS

        if config.get("arch") not in ARCHS:
            raise BadInput(f"model {name or ''} has architecture {config.get('arch')!r}; "
                           f"this calculator runs {' and '.join(map(repr, ARCHS))} models")
        self.base = base_calculator(config, name) if config.get("delta") else None
        from .device import resolve_device
        from .loop import torch_dtype

        self.model_ref = name
        self.config = config
        self.device = resolve_device(device)
        self.dtype = torch_dtype(dtype)
        from .potential import potential

        # eV, reference energies included (kept in float64 whatever ``dtype``)
        self.model = potential(config, members).to(self.device, self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        from registry.chem.elements import symbol_to_z

        self.elements = list(config["elements"])
        self._z = {symbol_to_z(s) for s in self.elements}
        self.n_members = len(members)
        self._torch = torch

    # -- construction from the registry ----------------------------------------------------
    @classmethod
    def from_registry(cls, ref: str, registry=None, *, device: str = "cpu",
                      dtype: str = "float32", strict: bool = False, **kwargs):
        """Pull ``ref`` (``NAME``, ``NAME:V`` or ``NAME@ALIAS``) from ``registry`` (default:
        a :class:`registry.Registry` at ``NNP_DATABASE_URL``), verified, and build the
        calculator. ``strict`` refuses a retracted version."""
        from .torch_io import load_state_dicts

        own = registry is None
        if own:
            from registry.core import Registry

            registry = Registry()
        try:
            pulled = registry.pull_model(ref, strict=strict)
        finally:
            if own:
                registry.close()
        if not pulled.config:
            raise BadInput(f"model {pulled.ref} has no stored config to rebuild it from")
        return cls(pulled.config, load_state_dicts(pulled), name=pulled.ref, device=device,
                   dtype=dtype, **kwargs)

    # -- ASE -------------------------------------------------------------------------------
    def check_elements(self, numbers) -> None:
        from registry.chem.elements import SYMBOLS

        lacking = sorted(set(int(z) for z in numbers) - self._z)
        if lacking:
            raise BadInput(f"model {self.name or ''} handles {', '.join(self.elements)}; "
                           f"the structure has {', '.join(SYMBOLS[z] for z in lacking)}")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        torch = self._torch
        atoms = self.atoms
        self.check_elements(atoms.numbers)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        want_stress = "stress" in properties
        if want_stress and not pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all three "
                                              "directions")
        want_forces = any(p in properties for p in ("forces", "forces_std")) or want_stress
        dev, dt = self.device, self.dtype
        species = torch.as_tensor(atoms.numbers, dtype=torch.long, device=dev).unsqueeze(0)
        coords = torch.as_tensor(atoms.positions, dtype=dt, device=dev).unsqueeze(0)
        cell = pbc_t = None
        if pbc.any():
            cell = torch.as_tensor(np.asarray(atoms.cell), dtype=dt, device=dev)
            pbc_t = torch.as_tensor(pbc, device=dev)
        if want_forces:
            coords.requires_grad_(True)
        strain = None
        if want_stress:
            strain = torch.zeros((3, 3), dtype=dt, device=dev, requires_grad=True)
            defo = torch.eye(3, dtype=dt, device=dev) + 0.5 * (strain + strain.T)
            x, c = coords @ defo, cell @ defo
        else:
            x, c = coords, cell
        with torch.set_grad_enabled(want_forces):
            members = self.model.member_energies(species, x, c, pbc_t)[:, 0]
        e = members.detach().cpu().numpy()
        base = self._base(atoms, want_forces, want_stress)
        if base is not None:
            self.results["delta_energy"] = float(e.mean())
            self.results["base_energy"] = base["energy"]
            e = e + base["energy"]
        k = self.n_members
        self.results["energies"] = e
        self.results["energy"] = self.results["free_energy"] = float(e.mean())
        self.results["energy_std"] = float(e.std(ddof=1)) if k > 1 else 0.0
        if want_forces:
            # each member's forces only when their spread is asked for: a backward pass per
            # member costs twice the whole call of the mean's one pass (4 members)
            spread = "forces_std" in properties and k > 1
            outputs = list(members) if spread else [members.mean()]
            per = []
            virial = torch.zeros((3, 3), dtype=torch.float64, device=dev)
            inputs = [coords] + ([strain] if want_stress else [])
            for i, out in enumerate(outputs):
                grads = torch.autograd.grad(out, inputs, retain_graph=i < len(outputs) - 1)
                per.append(-grads[0][0].double().cpu().numpy())
                if want_stress:
                    virial += grads[1].double()
            forces = np.stack(per)
            if base is not None:
                forces = forces + base["forces"]
            self.results["forces"] = forces.mean(axis=0)
            if spread:
                self.results["forces_std"] = forces.std(axis=0, ddof=1)
            elif k == 1:
                self.results["forces_std"] = np.zeros_like(forces[0])
            if want_stress:
                from ase.stress import full_3x3_to_voigt_6_stress

                volume = abs(float(np.linalg.det(np.asarray(atoms.cell))))
                stress = full_3x3_to_voigt_6_stress(
                    (virial / len(outputs)).cpu().numpy() / volume)
                if base is not None:
                    stress = stress + base["stress"]
                self.results["stress"] = stress

    def _base(self, atoms, forces: bool, stress: bool) -> dict | None:
        """The base level's energy (and forces, stress) of ``atoms``, for a Δ model."""
        if self.base is None:
            return None
        b = atoms.copy()
        b.calc = self.base
        out = {"energy": float(b.get_potential_energy())}
        if forces:
            out["forces"] = np.asarray(b.get_forces(), dtype=np.float64)
        if stress:
            out["stress"] = np.asarray(b.get_stress(), dtype=np.float64)
        return out


def base_calculator(config: dict, name: str | None = None):
    """The reference calculator of a Δ model's base level; :class:`BadInput` naming the
    level and the available ones when there is none (or its package is missing)."""
    from pipelines.simulation.calculators import CALCULATORS, make_calculator

    level = config.get("base_level")
    target = config.get("target")
    if not level:
        raise BadInput(f"model {name or ''} predicts a Δ correction ({target}) but records "
                       f"no base level (trained before base levels were stored); retrain it")
    if level.lower() not in CALCULATORS:
        raise BadInput(f"model {name or ''} predicts {target}: its base level {level!r} has "
                       f"no reference calculator to add at inference; available: "
                       f"{', '.join(CALCULATORS)}")
    try:
        return make_calculator(level)
    except ImportError as exc:
        raise BadInput(f"model {name or ''} needs its base level {level!r} at inference, but "
                       f"its calculator cannot load ({exc}); install it or use a model "
                       f"on another base") from None
