"""The small ANI-style model used by the demo: invariances and that fitting learns."""

import numpy as np
import torch
from ase.build import molecule

from pipelines.training.fit import fit_energies, pad
from pipelines.training.radial import RadialPotential


def _energy(model, atoms):
    z, x = pad([atoms.numbers], [atoms.positions])
    with torch.no_grad():
        return float(model(z, x)[0])


def test_energy_invariances():
    torch.manual_seed(0)
    model = RadialPotential([1, 6, 8]).double()
    a = molecule("CH3OH")
    e = _energy(model, a)
    b = a.copy()
    b.translate([1.0, -2.0, 3.0])
    b.rotate(37, "x", center="COM")
    assert abs(_energy(model, b) - e) < 1e-9
    perm = np.random.default_rng(0).permutation(len(a))
    assert abs(_energy(model, a[perm]) - e) < 1e-9
    c = a.copy()
    c.positions[0] += 0.1
    assert abs(_energy(model, c) - e) > 1e-6


def test_padding_does_not_change_energy():
    model = RadialPotential([1, 6, 8]).double()
    small, big = molecule("H2O"), molecule("CH3OH")
    z, x = pad([small.numbers, big.numbers], [small.positions, big.positions])
    with torch.no_grad():
        both = model(z, x)
    assert abs(float(both[0]) - _energy(model, small)) < 1e-9


def test_fit_beats_self_energy_baseline():
    rng = np.random.default_rng(1)
    frames = []
    for name in ("H2O", "CH4", "CH3OH"):
        base = molecule(name)
        for _ in range(30):
            a = base.copy()
            a.positions += rng.normal(scale=0.1, size=a.positions.shape)
            frames.append(a)
    # a smooth synthetic energy: harmonic bonds around the reference geometry
    energies = []
    for a in frames:
        d = a.get_all_distances()
        pairs = d[np.triu_indices(len(a), 1)]
        energies.append(float(np.sum(np.exp(-2 * pairs)) * 10) - 5.0 * len(a))
    split = np.array([0] * 70 + [2] * 20)
    rng.shuffle(split)
    res = fit_energies([a.numbers for a in frames], [a.positions for a in frames], energies,
                       split, epochs=150, seed=0)
    e = np.asarray(energies)
    counts = np.array([[np.sum(a.numbers == z) for z in (1, 6, 8)] for a in frames], float)
    sol, *_ = np.linalg.lstsq(counts[split == 0], e[split == 0], rcond=None)
    baseline = np.sqrt(np.mean((counts[split == 2] @ sol - e[split == 2]) ** 2))
    assert res.metrics["test_energy_rmse_ev"] < 0.7 * baseline
