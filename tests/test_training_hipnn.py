"""HIP-NN (``--arch hipnn``, hippynn) through the same training path as ANI: the CLI, seeds,
transfer, the calculator, periodic cells, evaluate and verification.

Small EMT data from tests/test_training.py and an in-process Dask cluster (threads; each task
still opens its own registry connection). The CLI test points ``NNP_DASK_SCHEDULER`` at that
cluster, so ``nnp train`` takes its scheduler route instead of starting worker processes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import test_training as tt
from helpers import counts, emt_frames, emt_labelled, finite_difference_forces
from test_training import LEVEL, SMALL, n_models

train_cli = tt.train_cli

TINY = {"n_features": 12, "n_sensitivities": 8, "n_interaction_layers": 1,
        "n_atom_layers": 1, "batch_size": 16}
KEYS = {"n", "energy_mae_ev", "energy_rmse_ev", "energy_mae_ev_per_atom",
        "forces_mae_ev_per_a", "forces_rmse_ev_per_a"}
FIRST_BLOCK = "network.blocks.0.*"


def make_dataset(reg, n: int = 6) -> None:
    reg.ingest(emt_frames(n), LEVEL)
    reg.set_reference_energies(LEVEL, {"H": -0.5, "C": -1.5, "N": -2.0, "O": -2.5})
    reg.create_dataset_version("mols", levels=[LEVEL], split="0.7,0.15,0.15",
                               group_by="none")


def train(reg, client, **kw):
    from pipelines.training.ensemble import train as run

    args = {"arch": "hipnn", "ensemble": 2, "epochs": 2, "patience": 10,
            "config": dict(TINY), "device": "cpu", "verify": False, **kw}
    return run(reg, "mols", client=client, **args)


def blobs(reg, ref) -> list[bytes]:
    p = reg.pull_model(ref)
    return [p.blobs[f] for f in p.weight_files()]


# ---------------------------------------------------------------------------- CLI
def test_cli_trains_verifies_and_evaluates_a_hipnn_ensemble(registry, nnp, capsys, cache,
                                                           client, tmp_path, monkeypatch,
                                                           train_cli):
    make_dataset(registry)
    monkeypatch.setenv("NNP_DASK_SCHEDULER", client.scheduler.address)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))
    assert nnp("train", "--dataset", "mols", "--arch", "hipnn", "--ensemble", "2",
               "--epochs", "2", "--config", cfg, "--device", "cpu", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "mols-hipnn:1" and isinstance(out["run_id"], int)
    for split in ("train", "val", "test"):
        assert set(out["metrics"][split]) == KEYS and out["metrics"][split]["n"] > 0
    assert [m["seed"] for m in out["members"]] == [0, 1]
    # the same verification checks as an ANI version, passed
    assert out["verification"]["passed"] is True
    assert set(out["verification"]["checks"]) == {"forces", "invariance", "nve_drift",
                                                  "cutoff_energy_jump", "cutoff_force_jump"}
    v = registry.show_model("mols-hipnn@latest")
    assert v["architecture"] == "hipnn" and v["n_members"] == 2 and v["cutoff"] == 5.0
    assert v["elements"] == ["H", "C", "N", "O"]
    c = v["config"]
    assert c["arch"] == "hipnn" and c["hippynn_version"] and c["n_features"] == 12
    assert c["tensor_order"] == 0 and c["forces_weight"] == 0.1
    assert set(c["self_energies_ev"]) == {"H", "C", "N", "O"}
    assert registry.get_run(out["run_id"])["params"]["arch"] == "hipnn"
    png = tmp_path / "parity.png"
    assert nnp("evaluate", "mols-hipnn:1", "--dataset", "mols", "--split", "all", "-o", png,
               "--device", "cpu", "--json") == 0
    ev = json.loads(capsys.readouterr().out)
    for split in ("train", "test"):  # scored as totals: the training metrics again
        for key in ("energy_mae_ev", "forces_mae_ev_per_a"):
            assert ev["metrics"][split][key] == pytest.approx(out["metrics"][split][key],
                                                              rel=1e-5)
    assert len(ev["members"]) == 2 and png.read_bytes().startswith(b"\x89PNG")
    before = (counts(registry), n_models(registry), len(registry.list_runs(kind="train")))
    bad = tmp_path / "ani.json"
    bad.write_text(json.dumps(SMALL))  # ANI keys
    assert nnp("train", "--dataset", "mols", "--arch", "hipnn", "--config", bad) == 2
    assert "unknown config key(s) 'angular_shifts', 'hidden', 'radial_shifts' for --arch " \
           "hipnn" in capsys.readouterr().err
    assert (counts(registry), n_models(registry),
            len(registry.list_runs(kind="train"))) == before


# ---------------------------------------------------------------------------- seeds, transfer
def test_same_seed_gives_bit_identical_weights_and_transfer_keeps_the_arch(registry, client,
                                                                            cache):
    from pipelines.training.torch_io import load_state_dicts
    from registry.errors import BadInput

    make_dataset(registry)
    a = train(registry, client, name="h", seed=3)["model"]
    b = train(registry, client, name="h", seed=3)["model"]
    first, second = blobs(registry, a)
    assert [first, second] == blobs(registry, b)  # byte-identical, both members
    assert first != second  # members are seeded 3 and 4
    # transfer between HIP-NN versions, the first interaction block frozen
    out = train(registry, client, name="fine", parent=a, freeze=[FIRST_BLOCK], ensemble=1,
                config={"lr": 1e-2})
    v = registry.show_model(out["model"])
    assert v["parent"] == a and v["architecture"] == "hipnn"
    assert "network.blocks.0.0.base_layer.int_weights" in v["frozen"]
    assert not any(n.startswith(("network.blocks.1", "energy.")) for n in v["frozen"])
    assert v["config"]["n_features"] == TINY["n_features"]  # the parent's architecture
    parent, child = load_state_dicts(registry.pull_model(a))[0], \
        load_state_dicts(registry.pull_model(out["model"]))[0]
    for name in v["frozen"]:
        assert np.array_equal(child[name].numpy(), parent[name].numpy()), name
    w = "energy.layers.1.weight"
    assert not np.array_equal(child[w].numpy(), parent[w].numpy())
    # no transfer between ANI and HIP-NN, either way, refused before any work
    ani = tt.train(registry, client, name="ani", ensemble=1, epochs=1,
                   forces_weight=0.0)["model"]
    before = (counts(registry), n_models(registry), len(registry.list_runs(kind="train")))
    with pytest.raises(BadInput, match="--from ani:1 has architecture 'ani' and --arch is "
                                       "'hipnn': transfer keeps the architecture"):
        train(registry, client, parent=ani, ensemble=1)
    with pytest.raises(BadInput, match="--from h:1 has architecture 'hipnn' and --arch is 'ani'"):
        tt.train(registry, client, parent=a, ensemble=1)
    with pytest.raises(BadInput, match="--from h:1 fixes the architecture"):
        train(registry, client, parent=a, config={"n_features": 16})
    assert (counts(registry), n_models(registry),
            len(registry.list_runs(kind="train"))) == before


# ---------------------------------------------------------------------------- calculator
def test_calculator_of_a_pulled_hipnn_model(registry, client, cache):
    from ase.build import molecule

    from pipelines.training.calculator import NNPCalculator

    make_dataset(registry)
    ref = train(registry, client, name="hip")["model"]
    registry.set_model_alias(ref, "production")
    calc = NNPCalculator.from_registry("hip@production", registry, dtype="float64")
    atoms = emt_frames(1, seed=5)[1]  # a rattled CH4
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert np.isfinite(e) and f.shape == (5, 3)
    assert calc.results["energy_std"] > 0 and len(calc.results["energies"]) == 2
    np.testing.assert_allclose(f, finite_difference_forces(atoms, calc), atol=1e-6)
    moved = atoms.copy()
    moved.positions += [1.7, -3.2, 0.4]
    moved.rotate(37, "z", center="COM")
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(e, abs=1e-9)
    # periodic: a CH4 in a box smaller than twice the cutoff (its images interact)
    box = molecule("CH4")
    box.cell, box.pbc = [4.0, 4.5, 5.0], True
    box.center()
    box.calc = calc
    eb, stress = box.get_potential_energy(), box.get_stress()
    alone = molecule("CH4")
    alone.calc = calc
    assert abs(eb - alone.get_potential_energy()) > 1e-4  # the images are seen
    shifted = box.copy()
    shifted.positions[1] += box.cell[0] - box.cell[2]  # an atom moved by a lattice vector
    shifted.calc = calc
    assert shifted.get_potential_energy() == pytest.approx(eb, abs=1e-9)
    np.testing.assert_allclose(shifted.get_forces(), box.get_forces(), atol=1e-9)
    big = box.repeat((2, 1, 2))
    big.calc = calc
    assert big.get_potential_energy() == pytest.approx(4 * eb, abs=1e-8)
    eps, d = 1e-5, np.eye(3)
    d[0, 0] += eps
    plus = box.copy()
    plus.set_cell(box.cell @ d, scale_atoms=True)
    plus.calc = calc
    d[0, 0] -= 2 * eps
    minus = box.copy()
    minus.set_cell(box.cell @ d, scale_atoms=True)
    minus.calc = calc
    fd = (plus.get_potential_energy() - minus.get_potential_energy()) / (2 * eps) \
        / box.get_volume()
    assert stress[0] == pytest.approx(fd, abs=1e-6)


# ---------------------------------------------------------------------------- periodic data
def test_periodic_training_and_partly_periodic_refusal(registry, client, cache):
    from ase.build import bulk, fcc111

    from pipelines.training.calculator import NNPCalculator
    from registry.errors import BadInput

    frames = []
    for k in range(12):  # two cells: batches share one, as for ANI
        a = bulk("Cu", "fcc", a=3.6, cubic=True) if k % 2 else bulk("Cu", "fcc", a=3.58)
        a.rattle(0.05, seed=k)
        frames.append(emt_labelled(a))
    registry.ingest(frames, LEVEL)
    registry.create_dataset_version("mols", levels=[LEVEL], split="0.7,0.15,0.15",
                                    group_by="none")
    out = train(registry, client, ensemble=1, config={**TINY, "cutoff": 4.0,
                                                       "dist_soft_max": 3.0})
    assert out["metrics"]["test"]["n"] > 0
    calc = NNPCalculator.from_registry(out["model"], registry, dtype="float64")
    one = frames[1].copy()
    one.calc = calc
    big = one.repeat((2, 2, 1))
    big.calc = calc
    assert big.get_potential_energy() == pytest.approx(4 * one.get_potential_energy(),
                                                       abs=1e-9)
    np.testing.assert_allclose(big.get_forces()[:len(one)], one.get_forces(), atol=1e-9)
    slab = fcc111("Cu", (2, 2, 2), vacuum=4.0)  # periodic in x and y only
    with pytest.raises(BadInput, match="periodic in all three directions"):
        slab.calc = calc
        slab.get_potential_energy()
    registry.ingest([emt_labelled(slab)], LEVEL)
    registry.create_dataset_version("slab", levels=[LEVEL], split="1,0,0", group_by="none")
    before = (n_models(registry), len(registry.list_runs(kind="train")))
    from pipelines.training.ensemble import train as run

    with pytest.raises(BadInput, match=r"got pbc \[True, True, False\].*use --arch ani"):
        run(registry, "slab", arch="hipnn", ensemble=1, epochs=1, client=client,
            device="cpu", verify=False)
    assert (n_models(registry), len(registry.list_runs(kind="train"))) == before


# ---------------------------------------------------------------------------- the module
def test_config_validation():
    from pipelines.training.hipnn import MODEL_DEFAULTS, check_config
    from registry.errors import BadInput

    cfg = check_config({"n_features": 8.0, "elements": ["O", 1]})
    assert cfg["n_features"] == 8 and cfg["elements"] == ["O", "H"]
    assert {k: cfg[k] for k in MODEL_DEFAULTS if k != "elements"} == \
        {**{k: v for k, v in MODEL_DEFAULTS.items() if k != "elements"}, "n_features": 8}
    for bad, message in [
        ({"hidden": [8]}, "unknown config key(s) 'hidden' for --arch hipnn"),
        ({"n_features": 0}, "n_features must be an integer > 0"),
        ({"dist_soft_max": 6.0}, "need dist_soft_min < dist_soft_max <= cutoff"),
        ({"resnet": 1}, "resnet must be true or false"),
        ({"activation": "relu"}, "activation 'relu': expected one of"),
        ({"tensor_order": 2}, "tensor_order must be 0 (HIP-NN) or 1 (HIP-NN-TS)"),
        ({"lr": -1}, "lr must be a number > 0"),
    ]:
        with pytest.raises(BadInput) as exc:
            check_config(bad)
        assert message in str(exc.value)


@pytest.mark.parametrize("tensor_order", [0, 1])
def test_padded_batches_and_seeds(tensor_order):
    """A padded batch gives each molecule's energy alone, forces vanish on padding atoms,
    and HIP-NN-TS state dicts hold tensors only (safetensors)."""
    import torch
    from ase.build import molecule

    from pipelines.training.hipnn import check_config, new_member
    from pipelines.training.torch_io import state_dict_to_safetensors

    cfg = {**check_config({"tensor_order": tensor_order}), "elements": ["H", "C", "O"],
           "self_energies_ev": {"H": -13.6, "C": -1000.0, "O": -2000.0}}
    model = new_member(cfg, 7, dtype=torch.float64)
    mols = [molecule("CH3OH"), molecule("H2O")]
    species = torch.full((2, 6), -1)
    coords = torch.zeros((2, 6, 3), dtype=torch.float64)
    for i, m in enumerate(mols):
        species[i, :len(m)] = torch.as_tensor(m.numbers)
        coords[i, :len(m)] = torch.as_tensor(m.positions)
    coords.requires_grad_(True)
    e = model((species, coords)).energies
    (grad,) = torch.autograd.grad(e.sum(), coords)
    for i, m in enumerate(mols):
        alone = model((torch.as_tensor(m.numbers)[None],
                       torch.as_tensor(m.positions)[None])).energies
        assert e[i].item() == pytest.approx(alone[0].item(), abs=1e-12)
    assert torch.all(grad[1, 3:] == 0)
    again = new_member(cfg, 7, dtype=torch.float64).state_dict()
    sd = model.state_dict()
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    assert state_dict_to_safetensors(sd)  # no non-tensor extra state
