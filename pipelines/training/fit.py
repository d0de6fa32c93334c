"""Fit a :class:`RadialPotential` to energies (eV) with self energies from least squares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .radial import RadialPotential


def pad(numbers_list, positions_list) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged structures -> (B, N) numbers with 0 padding and (B, N, 3) positions."""
    n = max(len(z) for z in numbers_list)
    z = np.zeros((len(numbers_list), n), dtype=np.int64)
    x = np.zeros((len(numbers_list), n, 3), dtype=np.float64)
    for i, (zi, xi) in enumerate(zip(numbers_list, positions_list, strict=True)):
        z[i, : len(zi)] = zi
        x[i, : len(zi)] = xi
    return torch.from_numpy(z), torch.from_numpy(x)


def self_energies(numbers_list, energies, elements) -> np.ndarray:
    """Per-element energies minimising ||counts @ e - E|| (least squares)."""
    counts = np.array([[np.sum(np.asarray(z) == el) for el in elements] for z in numbers_list],
                      dtype=float)
    sol, *_ = np.linalg.lstsq(counts, np.asarray(energies, dtype=float), rcond=None)
    return sol


@dataclass
class FitResult:
    model: RadialPotential
    metrics: dict
    predictions: dict  # split -> (reference, predicted) arrays, eV


def fit_energies(numbers_list, positions_list, energies, split, *, epochs: int = 300,
                 lr: float = 3e-3, seed: int = 0, cutoff: float = 5.0,
                 device: str | None = None, on_epoch=None) -> FitResult:
    """Train on split==0, report RMSE/MAE (eV and eV/atom) on every split present."""
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    energies = np.asarray(energies, dtype=float)
    split = np.asarray(split)
    elements = sorted({int(z) for zs in numbers_list for z in zs})
    model = RadialPotential(elements, cutoff=cutoff).double()
    train = split == 0
    shift = self_energies([numbers_list[i] for i in np.flatnonzero(train)], energies[train],
                          elements)
    model.nets.self_energies.copy_(torch.from_numpy(shift))
    model.to(device)
    z, x = pad(numbers_list, positions_list)
    z, x = z.to(device), x.to(device)
    e = torch.from_numpy(energies).to(device)
    natoms = (z > 0).sum(1).to(e.dtype)
    idx = torch.from_numpy(np.flatnonzero(train)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        model.train()
        perm = idx[torch.randperm(len(idx), device=device)]
        for b in perm.split(64):
            opt.zero_grad()
            loss = (((model(z[b], x[b]) - e[b]) / natoms[b]) ** 2).mean()
            loss.backward()
            opt.step()
        sched.step()
        if on_epoch:
            on_epoch(epoch + 1, epochs, float(loss.detach()))
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(z[b], x[b]) for b in torch.arange(len(e)).split(256)])
    pred = pred.cpu().numpy()
    metrics, predictions = {}, {}
    for code, name in ((0, "train"), (1, "val"), (2, "test")):
        m = split == code
        if not m.any():
            continue
        err = pred[m] - energies[m]
        per_atom = err / natoms.cpu().numpy()[m]
        metrics[f"{name}_energy_rmse_ev"] = float(np.sqrt(np.mean(err**2)))
        metrics[f"{name}_energy_mae_ev"] = float(np.mean(np.abs(err)))
        metrics[f"{name}_energy_rmse_ev_per_atom"] = float(np.sqrt(np.mean(per_atom**2)))
        metrics[f"{name}_n"] = int(m.sum())
        predictions[name] = (energies[m], pred[m])
    return FitResult(model.cpu(), metrics, predictions)
