"""Periodic batches through torchani, one frame at a time.

torchani's all-pairs neighbour list takes one cell and builds the pairs of the first frame's
atoms only (its periodic pair indices carry no frame offset), so in a batch of several
periodic frames every frame after the first got the wrong neighbours: wrong energies, forces
and AEVs. Training groups periodic frames by cell (one cell per batch); these helpers run such
a batch frame by frame and join the results, so every caller gets per-frame-correct values.
"""

from __future__ import annotations


def per_frame(fn, species, coords, cell, pbc, *, dim: int = -1):
    """``fn(species, coords, cell, pbc)`` for a batch; a periodic batch of more than one
    frame is run one frame at a time and the results joined along ``dim`` (the frame axis of
    what ``fn`` returns: -1 for energies (B,) or (K, B), 0 for per-atom arrays (B, n, ...))."""
    import torch

    if cell is None or species.shape[0] <= 1:
        return fn(species, coords, cell, pbc)
    return torch.cat([fn(species[i:i + 1], coords[i:i + 1], cell, pbc)
                      for i in range(species.shape[0])], dim=dim)


def model_energies(model, species, coords, cell, pbc, **kwargs):
    """``model((species, coords), cell, pbc, **kwargs).energies``, per frame when periodic."""
    return per_frame(lambda s, x, c, p: model((s, x), c, p, **kwargs).energies,
                     species, coords, cell, pbc)
