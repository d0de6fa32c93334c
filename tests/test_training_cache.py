"""The AEV cache (pipelines/training/aev_cache.py): cached AEVs and position Jacobians give the
energies, forces and trained weights of the autograd path, are built once per dataset version,
and fall back to autograd (with the reason) when they cannot serve.

Small data built here: H2O, CH4 and NH3 (and Cu cells) rattled and labelled with ASE's EMT.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from helpers import emt_frames, emt_labelled

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"
SMALL = {"hidden": [16, 16], "radial_shifts": 8, "angular_shifts": 4, "batch_size": 8,
         "dtype": "float64", "checkpoint_every": 0}


def _plan(reg, frames, **config):
    from pipelines.training.ensemble import prepare

    reg.ingest(frames, LEVEL)
    reg.create_dataset_version("mols", levels=[LEVEL], split="0.7,0.15,0.15",
                               group_by="none")
    return prepare(reg, "mols", ensemble=1, device="cpu", config={**SMALL, **config},
                   epochs=2, patience=5)


def _compare_batches(plan, rtol=1e-9):
    """Cached and autograd energies and forces of every batch of the version (float64)."""
    import torch

    from pipelines.training.aev_cache import features_for
    from pipelines.training.archs import new_member
    from pipelines.training.loop import energies_ev

    cfg, data = plan["config"], plan["data"]
    model = new_member(cfg, 0, "cpu", torch.float64)
    feats, status = features_for(data, model, cfg, "cpu", torch.float64, True)
    assert status.startswith("built in"), status
    n = 0
    for b in data.batches(None, 8, dtype=torch.float64, forces=True, features=feats):
        e1, f1 = (t.detach() for t in energies_ev(model, b, True))
        b.cached = None
        e2, f2 = (t.detach() for t in energies_ev(model, b, True))
        scale = float(f2.abs().max())
        assert float((e1 - e2).abs().max()) <= rtol * float(e2.abs().max()) + 1e-12
        assert float((f1 - f2).abs().max()) <= rtol * scale + 1e-12
        n += len(b.index)
    assert n == data.n_structures
    return feats


def test_cached_training_matches_autograd(registry, cache, caplog):
    from pipelines.training.loop import train_member

    plan = _plan(registry, emt_frames(8))
    _compare_batches(plan)
    data, cfg = plan["data"], plan["config"]
    assert cfg["aev_cache"] is True  # the default
    with caplog.at_level(logging.INFO, logger="pipelines.training.aev_cache"):
        cached = train_member(data, cfg, seed=1)
    assert cached["aev_cache"] == "hit"  # the comparison above built it
    autograd = train_member(data, {**cfg, "aev_cache": False}, seed=1)
    assert autograd["aev_cache"] == "off: aev_cache is false"
    # the same training up to float rounding: weights, curve and predictions
    for key, w in autograd["state_dict"].items():
        np.testing.assert_allclose(cached["state_dict"][key].numpy(), w.numpy(),
                                   rtol=1e-7, atol=1e-10, err_msg=key)
    assert [c["train_loss"] for c in cached["curve"]] == \
        pytest.approx([c["train_loss"] for c in autograd["curve"]], rel=1e-8)
    np.testing.assert_allclose(cached["predictions"]["forces"],
                               autograd["predictions"]["forces"], rtol=1e-7, atol=1e-10)
    # reproducible: the same seed from the cache on disk gives bit-identical weights
    again = train_member(data, cfg, seed=1)
    for key, w in cached["state_dict"].items():
        assert again["state_dict"][key].numpy().tobytes() == w.numpy().tobytes(), key


def test_periodic_cells_with_self_images(registry, cache):
    from ase.build import bulk

    frames = []
    for k in range(6):
        a = bulk("Cu", "fcc", a=3.6, cubic=True) if k % 2 else bulk("Cu", "fcc", a=3.58)
        a.rattle(0.05, seed=k)  # 1- and 4-atom cells: every atom sees its own images
        frames.append(emt_labelled(a))
    plan = _plan(registry, frames)
    assert plan["data"].periodic
    _compare_batches(plan)


def test_periodic_batches_match_single_frames(registry, cache):
    """Several frames of one cell in a batch: each gets its own energy and forces, the ones
    the calculator (its own neighbour list, one frame) gives. torchani's all-pairs periodic
    neighbour list covers only a batch's first frame; training, evaluation and the cache
    must not depend on it."""
    import torch
    from ase import Atoms
    from ase.build import bulk

    from pipelines.training.aev_cache import features_for
    from pipelines.training.archs import new_member
    from pipelines.training.calculator import NNPCalculator
    from pipelines.training.evaluate import predict_members
    from pipelines.training.loop import energies_ev

    frames = []
    for k in range(7):
        a = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
        a.rattle(0.15, seed=k)
        a.positions[k] += a.cell[0] * 1.2  # one atom outside the box, as MD leaves them
        frames.append(emt_labelled(a))
    plan = _plan(registry, frames)
    cfg, data = plan["config"], plan["data"]
    (group,) = data.groups
    model = new_member(cfg, 0, "cpu", torch.float64)
    calc = NNPCalculator(cfg, [model.state_dict()])
    want_e, want_f = {}, {}
    for i, row in enumerate(group.index):
        n = int(group.n_atoms[i])
        at = Atoms(numbers=group.numbers[i][:n], positions=group.positions[i][:n],
                   cell=group.cell, pbc=group.pbc)
        at.calc = calc
        # the calculator adds the reference energies; batches predict the residual
        want_e[row] = at.get_potential_energy() - data.energy_ref[row]
        want_f[row] = at.get_forces()
    assert len({round(e, 6) for e in want_e.values()}) == len(frames)
    feats, _ = features_for(data, model, cfg, "cpu", torch.float64, True)
    for features in (feats, None):
        for b in data.batches(None, 4, dtype=torch.float64, forces=True, features=features):
            assert len(b.index) > 1 or features is None
            e, f = (t.detach().numpy() for t in energies_ev(model, b, True))
            for i, row in enumerate(b.index):
                assert e[i] == pytest.approx(want_e[row], abs=1e-4)
                np.testing.assert_allclose(f[i][:32], want_f[row], rtol=1e-5, atol=1e-4)
    e, f = predict_members(new_member(cfg, 0, "cpu", torch.float32), data, ["train", "val",
                           "test"], "cpu", torch.float32, True, 4, n_members=1)
    off = data.atom_offsets()
    for row in group.index:
        assert e[0, row] == pytest.approx(want_e[row], abs=1e-3)
        np.testing.assert_allclose(f[0, off[row]:off[row + 1]], want_f[row], rtol=1e-4, atol=1e-3)


def test_energy_only_and_over_budget_fall_back(registry, cache, caplog, tmp_path):
    import torch

    from pipelines.training.aev_cache import features_for
    from pipelines.training.archs import new_member
    from pipelines.training.loop import train_member

    plan = _plan(registry, emt_frames(4, forces=False), forces_weight=0)
    data, cfg = plan["data"], plan["config"]
    out = train_member(data, cfg, seed=0)
    assert out["aev_cache"].startswith("built in") and out["predictions"]["forces"] is None
    assert any(p.name.startswith("aev-") for p in (tmp_path / "cache" / data.hash).iterdir())
    model = new_member(cfg, 0, "cpu", torch.float64)
    with caplog.at_level(logging.WARNING, logger="pipelines.training.aev_cache"):
        feats, status = features_for(data, model, {**cfg, "aev_cache_max_mb": 1e-3}, "cpu",
                                     torch.float64, True)
    assert feats is None
    assert status.startswith("off: it would take") and "over aev_cache_max_mb = 0.001" in status
    assert "training by autograd" in caplog.text
    small = train_member(data, {**cfg, "aev_cache_max_mb": 1e-3}, seed=0)
    plain = train_member(data, {**cfg, "aev_cache": False}, seed=0)
    for key, w in plain["state_dict"].items():  # the fallback is the autograd path itself
        assert small["state_dict"][key].numpy().tobytes() == w.numpy().tobytes()


def test_corrupted_cache_is_rebuilt_and_layout_is_checked(monkeypatch, tmp_path):
    import torch

    from pipelines.training import aev_cache
    from pipelines.training.archs import new_member
    from pipelines.training.data import training_data
    from registry.training_data.materialize import Materialized

    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "cache"))
    frames = emt_frames(2)
    n = max(len(a) for a in frames)
    bucket = {"structure_id": np.arange(len(frames)), "n_atoms": np.array([len(a) for a in frames]),
              "numbers": np.zeros((len(frames), n), np.uint8),
              "positions": np.zeros((len(frames), n, 3)), "cell": np.zeros((len(frames), 3, 3)),
              "pbc": np.zeros((len(frames), 3), bool), "split": np.zeros(len(frames), np.int8),
              "energy": np.array([a.info["energy"] for a in frames]),
              "forces": np.full((len(frames), n, 3), np.nan),
              "energy_ref": np.zeros(len(frames))}
    for i, a in enumerate(frames):
        bucket["numbers"][i, :len(a)] = a.numbers
        bucket["positions"][i, :len(a)] = a.positions
        bucket["forces"][i, :len(a)] = a.arrays["forces"]
    data = training_data(Materialized("m:1", "f" * 64, [LEVEL], LEVEL, [bucket], "cache"))
    cfg = {**SMALL, **_stored(["H", "C", "N", "O"])}
    model = new_member(cfg, 0, "cpu", torch.float64)
    _, first = aev_cache.features_for(data, model, cfg, "cpu", torch.float64, True)
    assert first.startswith("built in")
    entry = next(p for p in (tmp_path / "cache" / data.hash).iterdir() if p.is_dir())
    blob = bytearray((entry / "data.bin").read_bytes())
    blob[100] ^= 0xFF
    (entry / "data.bin").write_bytes(bytes(blob))
    _, again = aev_cache.features_for(data, model, cfg, "cpu", torch.float64, True)
    assert again.startswith("built in")
    assert aev_cache.features_for(data, model, cfg, "cpu", torch.float64, True)[1] == "hit"
    # a layout other than torchani's block layout is refused, not silently truncated
    dims_for = aev_cache._Layout.dims_for
    monkeypatch.setattr(aev_cache._Layout, "dims_for",
                        lambda self, elem: dims_for(self, elem).roll(1, dims=0))
    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "other"))
    feats, status = aev_cache.features_for(data, model, cfg, "cpu", torch.float64, True)
    assert feats is None and "outside its element block" in status


def _stored(symbols):
    from pipelines.training.ani import check_config

    cfg = check_config({**SMALL, "elements": symbols})
    return {**cfg, "arch": "ani", "self_energies_ev": dict.fromkeys(symbols, 0.0)}


def test_config_keys_are_checked():
    from pipelines.training.aev_cache import features_for
    from pipelines.training.ani import check_config
    from registry.errors import BadInput

    assert check_config({})["aev_cache"] is True
    with pytest.raises(BadInput, match="aev_cache must be true or false"):
        check_config({"aev_cache": "yes"})
    with pytest.raises(BadInput, match="aev_cache_max_mb must be a number > 0"):
        check_config({"aev_cache_max_mb": 0})
    assert features_for(None, None, {"arch": "hipnn"}, "cpu", None, True) == \
        (None, "off: arch 'hipnn' (the AEV cache serves ani)")
