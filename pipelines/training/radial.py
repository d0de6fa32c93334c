"""A small ANI-style potential: radial environment vectors + one MLP per element.

``RadialAEV`` turns (species, positions) into per-atom features (Gaussian radial basis per
neighbour element, cosine cutoff); ``AtomicNets`` maps them to atomic energies summed per
structure, plus fixed per-element self energies. Energies in eV, distances in Å.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RadialAEV(nn.Module):
    """Per-atom radial features: for each neighbour element, ``n_rbf`` Gaussians in [0.8, rc]."""

    def __init__(self, n_species: int, cutoff: float = 5.0, n_rbf: int = 16, eta: float = 4.0):
        super().__init__()
        self.n_species, self.cutoff = n_species, cutoff
        self.register_buffer("mu", torch.linspace(0.8, cutoff, n_rbf))
        self.eta = eta

    @property
    def n_features(self) -> int:
        return self.n_species * self.mu.numel()

    def forward(self, species: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """species (B, N) with -1 padding, positions (B, N, 3) -> features (B, N, F)."""
        mask = species >= 0
        diff = positions[:, :, None, :] - positions[:, None, :, :]
        pair = mask[:, :, None] & mask[:, None, :]
        pair &= ~torch.eye(species.shape[1], dtype=torch.bool, device=species.device)
        r = torch.sqrt((diff**2).sum(-1) + (~pair).to(positions.dtype))  # safe sqrt at padding
        fc = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0) * (r < self.cutoff) * pair
        g = torch.exp(-self.eta * (r[..., None] - self.mu) ** 2) * fc[..., None]  # B,N,N,K
        onehot = nn.functional.one_hot(species.clamp(min=0), self.n_species).to(g.dtype)
        onehot = onehot * mask[..., None]
        feats = torch.einsum("bijk,bjs->bisk", g, onehot)  # B,N,S,K
        return feats.reshape(*species.shape, -1)


class AtomicNets(nn.Module):
    """One MLP per element; structure energy = sum of atomic energies + self energies."""

    def __init__(self, n_species: int, n_features: int, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        nets = []
        for _ in range(n_species):
            layers, width = [], n_features
            for h in hidden:
                layers += [nn.Linear(width, h), nn.CELU(alpha=0.1)]
                width = h
            layers.append(nn.Linear(width, 1))
            nets.append(nn.Sequential(*layers))
        self.nets = nn.ModuleList(nets)
        self.register_buffer("self_energies", torch.zeros(n_species, dtype=torch.float64))

    def forward(self, species: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        atomic = torch.zeros(species.shape, dtype=features.dtype, device=features.device)
        for s, net in enumerate(self.nets):
            m = species == s
            if m.any():
                atomic[m] = net(features[m]).squeeze(-1)
        shift = self.self_energies.to(features.dtype)[species.clamp(min=0)] * (species >= 0)
        return (atomic + shift).sum(-1)


class RadialPotential(nn.Module):
    """AEV -> per-element nets -> energy (eV). ``elements`` maps species index -> Z."""

    def __init__(self, elements: list[int], cutoff: float = 5.0, n_rbf: int = 16,
                 hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        self.elements = list(elements)
        self.config = {"elements": self.elements, "cutoff": cutoff, "n_rbf": n_rbf,
                       "hidden": list(hidden)}
        self.aev = RadialAEV(len(elements), cutoff, n_rbf)
        self.nets = AtomicNets(len(elements), self.aev.n_features, hidden)
        index = torch.full((119,), -1, dtype=torch.long)
        index[torch.tensor(self.elements)] = torch.arange(len(elements))
        self.register_buffer("z_to_species", index)

    @classmethod
    def from_config(cls, config: dict) -> RadialPotential:
        return cls(config["elements"], config["cutoff"], config["n_rbf"],
                   tuple(config["hidden"]))

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers (B, N) with 0 padding -> species indices with -1 padding."""
        return torch.where(numbers > 0, self.z_to_species[numbers], -1)

    def forward(self, numbers: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        species = self.species(numbers)
        return self.nets(species, self.aev(species, positions))
