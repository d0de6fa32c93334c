"""Neighbour pairs for the calculator and the TorchScript export: linear-scaling and scriptable.

torchani's own lists do the work: ``all_pairs`` (O(N²), batches of molecules, any cell) and
``cell_list`` (O(N): space cut into buckets one cutoff wide, pairs searched only in adjacent
buckets). :func:`neighbor_pairs` picks the cell list for one system of at least
``min_atoms`` atoms (torchani's own adaptive thresholds: 190 periodic, 1770 open) whose
buckets fit in the cell, and all pairs otherwise. Both map atoms into the central cell
first, so an atom that has left the box, or moved by a lattice vector, gives the same pairs.

torchani's cell list needs all three directions periodic; for a slab or a wire
(``pbc`` partly true) :func:`closed_cell` replaces each open direction by a vector normal to
the periodic ones, longer than the structure plus twice the cutoff, and moves the atoms
rigidly inside it: no pair crosses that vacuum, so the pairs (and their distance vectors)
are those of the open direction, and the periodic rows keep their gradient (stress). The same
trick is what torchani does for open molecules (``compute_bounding_cell``).

Everything here compiles with ``torch.jit.script``: the exported model carries it.
"""

import torch
from torch import Tensor
from torchani.neighbors import Neighbors, all_pairs, cell_list, setup_grid
from torchani.utils import map_to_central

PERIODIC_MIN_ATOMS = 190    # torchani's AdaptiveList thresholds
MOLECULE_MIN_ATOMS = 1770


def closed_cell(coords: Tensor, cell: Tensor, pbc: Tensor,
                cutoff: float) -> tuple[Tensor, Tensor]:
    """(coordinates, cell) periodic in all three directions with the pairs of ``cell``
    periodic only along ``pbc``; the coordinates move rigidly (a constant shift)."""
    periodic = pbc.nonzero().flatten()
    n_open = 3 - periodic.shape[0]
    rows = cell.detach().index_select(0, periodic)
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    # QR of [periodic rows | unit vectors]: Q's last columns are orthonormal to the rows
    q, _ = torch.linalg.qr(torch.cat([rows, eye], 0).t())
    normals = q.t()[periodic.shape[0]:]                        # (open, 3)
    x = coords.detach().reshape(-1, 3)
    proj = x @ normals.t()                                     # (atoms, open)
    low = proj.min(0).values - cutoff
    length = proj.max(0).values - low + cutoff + 1.0           # > extent + 2 cutoff
    shift = (low.unsqueeze(1) * normals).sum(0)
    closed = cell.clone()
    open_dirs = (~pbc).nonzero().flatten()
    for k in range(n_open):
        closed[int(open_dirs[k])] = normals[k] * length[k]
    return coords - shift, closed


def neighbor_pairs(cutoff: float, elem_idxs: Tensor, coords: Tensor,
                   cell: Tensor | None = None, pbc: Tensor | None = None,
                   min_atoms: int = PERIODIC_MIN_ATOMS,
                   min_atoms_molecule: int = MOLECULE_MIN_ATOMS) -> Neighbors:
    """Pairs within ``cutoff`` (see the module docstring). ``coords`` (batch, atoms, 3);
    periodic input is one system (batch 1). The distance vectors are differentiable with
    respect to ``coords`` and the periodic rows of ``cell``."""
    if pbc is None or cell is None or not bool(pbc.any()):
        if coords.shape[0] == 1 and coords.shape[1] >= min_atoms_molecule:
            return cell_list(cutoff, elem_idxs, coords, None, None)
        return all_pairs(cutoff, elem_idxs, coords, None, None)
    if coords.shape[0] != 1:
        raise ValueError("periodic input must be one system (batch size 1)")
    if not bool(pbc.all()):
        coords, cell = closed_cell(coords, cell, pbc, cutoff)
        pbc = torch.ones(3, dtype=torch.bool, device=coords.device)
    if coords.shape[1] >= min_atoms and bool((setup_grid(cell.detach(), cutoff) > 0).all()):
        # wrapped here, differentiably: the cell list wraps against a detached cell, which
        # drops the cell derivative (the stress) of every atom outside the box
        coords = map_to_central(coords, cell, pbc)
        return cell_list(cutoff, elem_idxs, coords, cell, pbc)
    return all_pairs(cutoff, elem_idxs, coords, cell, pbc)
