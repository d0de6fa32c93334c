"""The energy model of a registered version: its ensemble + reference energies, in eV.

:class:`Potential` is what the ASE calculator runs and what the TorchScript export
(:mod:`.torchscript`) holds, so the two agree by construction. From atomic numbers and
coordinates in Å (plus a cell and pbc for periodic systems) it returns energies in **eV**
(float64): each member's energy (its networks and its self energies ``self_energies_ev``;
for ANI also the optional xTB repulsion) plus the level's atomic reference energies
``reference_energies_ev`` (subtracted from the targets in training). ``forward`` gives the
ensemble mean, ``member_energies`` each member's; forces and stress come from autograd.

:class:`ANIPotential` finds the neighbours itself with :func:`.neighbors.neighbor_pairs`
(torchani's linear-scaling cell list for large and periodic systems) and hands them to the
torchani model; other architectures (:mod:`.archs`) find their own pairs.

The reference energies are a plain list of floats, not a buffer, so that ``.to(float32)`` on
the module keeps them in double precision: they are large (≈ −1000 eV per carbon atom at a
DFT level) next to what the networks predict.
"""

import torch
from torch import Tensor

from .ani import HARTREE_EV
from .neighbors import MOLECULE_MIN_ATOMS, PERIODIC_MIN_ATOMS, neighbor_pairs

MAX_Z = 118


class Potential(torch.nn.Module):
    """Energies (eV) of an ensemble ``model`` whose ``forward((species, coordinates), cell,
    pbc, ensemble_values=True).energies`` are (members, batch) Hartree, reference energies
    (``{atomic number: eV}``) added."""

    reference_energies_ev: list[float]
    hartree_ev: float

    def __init__(self, model, reference_energies_ev: dict[int, float]):
        super().__init__()
        self.model = model
        table = [0.0] * (MAX_Z + 1)
        for z, e in reference_energies_ev.items():
            table[int(z)] = float(e)
        self.reference_energies_ev = table
        self.hartree_ev = HARTREE_EV  # the members predict Hartree, as torchani's do

    def forward(self, species: Tensor, coordinates: Tensor, cell: Tensor | None = None,
                pbc: Tensor | None = None) -> Tensor:
        """(batch,) ensemble-mean energies in eV. ``species``: (batch, atoms) atomic numbers
        (−1 pads a shorter molecule); ``coordinates``: (batch, atoms, 3) Å, the dtype of the
        weights; ``cell``: (3, 3) Å, rows are lattice vectors; ``pbc``: (3,) bool."""
        return self.member_energies(species, coordinates, cell, pbc).mean(0)

    @torch.jit.export
    def member_energies(self, species: Tensor, coordinates: Tensor,
                        cell: Tensor | None = None, pbc: Tensor | None = None) -> Tensor:
        """(members, batch) energies in eV, float64."""
        hartree = self.hartree_members(species, coordinates, cell, pbc)
        table = torch.tensor(self.reference_energies_ev, dtype=torch.float64,
                             device=species.device)
        ref = torch.where(species >= 0, table[species.clamp(min=0)], table.new_zeros(()))
        return hartree.double() * self.hartree_ev + ref.sum(-1)

    def hartree_members(self, species: Tensor, coordinates: Tensor, cell: Tensor | None,
                        pbc: Tensor | None) -> Tensor:
        return self.model((species, coordinates), cell, pbc, ensemble_values=True).energies


class ANIPotential(Potential):
    """A torchani ANI ensemble, its neighbours from :func:`.neighbors.neighbor_pairs`."""

    min_atoms: int
    min_atoms_molecule: int

    def __init__(self, model, reference_energies_ev: dict[int, float],
                 min_atoms: int = PERIODIC_MIN_ATOMS,
                 min_atoms_molecule: int = MOLECULE_MIN_ATOMS):
        super().__init__(model, reference_energies_ev)
        self.min_atoms = min_atoms
        self.min_atoms_molecule = min_atoms_molecule

    def hartree_members(self, species: Tensor, coordinates: Tensor, cell: Tensor | None,
                        pbc: Tensor | None) -> Tensor:
        elem_idxs = self.model.species_converter(species)
        neighbors = neighbor_pairs(self.model.cutoff, elem_idxs, coordinates, cell, pbc,
                                   self.min_atoms, self.min_atoms_molecule)
        return self.model.compute_from_neighbors(elem_idxs, coordinates, neighbors,
                                                 ensemble_values=True).energies


def potential(config: dict, members: list[dict]) -> Potential:
    """The potential of a stored ``config`` (any architecture of :mod:`.archs`) and its
    members' state dicts, float32 on CPU."""
    from registry.chem.elements import symbol_to_z

    from .archs import config_arch, load_ensemble

    refs = {symbol_to_z(s): float(e)
            for s, e in (config.get("reference_energies_ev") or {}).items()}
    model = load_ensemble(config, members)
    return (ANIPotential if config_arch(config) == "ani" else Potential)(model, refs)
