"""Training: ANI ensembles on Dask registered as one version, reproducible, used from ASE.

Small data built here: H2O, CH4 and NH3 rattled and labelled with ASE's EMT calculator.
Library tests use an in-process Dask cluster (threads; each task still opens its own
registry connection from the URL); the CLI test runs the production path (a local
process cluster).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import counts, emt_frames, finite_difference_forces

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"
SMALL = {"hidden": [16, 16], "radial_shifts": 8, "angular_shifts": 4, "batch_size": 16}




def make_dataset(reg, name: str = "mols", forces: bool = True, refs: bool = True) -> dict:
    reg.ingest(emt_frames(forces=forces), LEVEL)
    if refs:
        reg.set_reference_energies(LEVEL, {"H": -0.5, "C": -1.5, "N": -2.0, "O": -2.5})
    return reg.create_dataset_version(name, levels=[LEVEL], split="0.7,0.15,0.15",
                                      group_by="none")






def train(reg, client, **kw):
    from pipelines.training.ensemble import train as run

    args = {"ensemble": 2, "epochs": 6, "patience": 10, "config": dict(SMALL),
            "device": "cpu", "verify": False, **kw}
    return run(reg, "mols", client=client, **args)


def n_models(reg) -> int:
    return sum(m["versions"] for m in reg.list_models())


# ---------------------------------------------------------------------------- training
def test_train_registers_one_version_with_every_member(registry, client, cache):
    make_dataset(registry)
    out = train(registry, client, name="ani-mols")
    assert out["model"] == "ani-mols:1"
    v = registry.show_model("ani-mols@latest")
    assert v["n_members"] == 2 and v["architecture"] == "ani"
    assert v["dataset_version"]["ref"] == "mols:1" and v["level"] == LEVEL
    assert v["elements"] == ["H", "C", "N", "O"] and v["cutoff"] == 5.2
    names = {f["name"] for f in v["files"]}
    assert {"member_0.safetensors", "member_1.safetensors", "parity.png",
            "learning_curve.png", "learning_curve.json"} <= names
    pulled = registry.pull_model("ani-mols:1")
    for png in ("parity.png", "learning_curve.png"):
        assert pulled.extras[png].startswith(b"\x89PNG")
    keys = {"n", "energy_mae_ev", "energy_rmse_ev", "energy_mae_ev_per_atom",
            "forces_mae_ev_per_a", "forces_rmse_ev_per_a"}
    for split in ("train", "val", "test"):
        assert set(out["metrics"][split]) == keys
        assert set(v["metrics"][split]) == keys
        assert out["metrics"][split]["n"] > 0
    assert [m["seed"] for m in out["members"]] == [0, 1]
    assert len(v["metrics"]["members"]) == 2
    cfg = v["config"]
    assert cfg["reference_energies_ev"] == {"C": -1.5, "H": -0.5, "N": -2.0, "O": -2.5}
    assert set(cfg["self_energies_ev"]) == {"C", "H", "N", "O"}
    assert cfg["forces_weight"] == 0.1 and cfg["hidden"] == [16, 16]
    run = registry.get_run(out["run_id"])
    assert run["kind"] == "train" and run["status"] == "ok"
    assert [e["ref"] for e in run["inputs"] if e["entity_type"] == "dataset_version"] == \
        ["mols:1"]
    assert any(e["entity_type"] == "model_version" and e["ref"] == "ani-mols:1"
               for e in run["outputs"])
    curve = json.loads(pulled.extras["learning_curve.json"])
    assert len(curve) == 2 and {"epoch", "train_loss", "val_energy_mae_ev"} <= set(curve[0][0])


def test_energy_only_training_has_no_force_metrics(registry, client, cache):
    make_dataset(registry, forces=False, refs=False)
    out = train(registry, client, epochs=3)
    assert set(out["metrics"]["test"]) == {"n", "energy_mae_ev", "energy_rmse_ev",
                                           "energy_mae_ev_per_atom"}
    cfg = registry.show_model(out["model"])["config"]
    assert cfg["forces_weight"] == 0.0
    assert set(cfg["reference_energies_ev"].values()) == {0.0}


def test_same_seed_gives_bit_identical_weights(registry, client, cache):
    make_dataset(registry)
    a = registry.pull_model(train(registry, client, seed=3)["model"])
    b = registry.pull_model(train(registry, client, seed=3)["model"])
    c = registry.pull_model(train(registry, client, seed=4)["model"])
    files = a.weight_files()
    assert [a.blobs[f] for f in files] == [b.blobs[f] for f in files]
    # member 1 of seed 3 and member 0 of seed 4 are both seeded 4
    assert a.blobs[files[1]] == c.blobs[files[0]]
    assert a.blobs[files[0]] != c.blobs[files[0]]


def test_early_stopping_keeps_the_best_epoch(registry, cache, monkeypatch):
    from pipelines.training import loop
    from pipelines.training.ensemble import prepare

    make_dataset(registry)
    plan = prepare(registry, "mols", ensemble=1, device="cpu", config=dict(SMALL),
                   epochs=50, patience=2)
    scores = iter([9.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    monkeypatch.setattr(loop, "_epoch_loss", lambda *a: (next(scores), 0.1))
    out = loop.train_member(plan["data"], plan["config"], seed=0)
    assert (out["best_epoch"], out["epochs"]) == (2, 4)
    assert [c["val_loss"] for c in out["curve"]] == [9.0, 5.0, 6.0, 7.0]


# ---------------------------------------------------------------------------- calculator
def test_calculator_energies_forces_and_ensemble_spread(registry, client, cache):
    from ase.build import molecule

    from pipelines.training.calculator import NNPCalculator
    from registry.errors import BadInput

    make_dataset(registry)
    ref = train(registry, client, name="ani")["model"]
    registry.set_model_alias(ref, "production")
    calc = NNPCalculator.from_registry("ani@production", registry, dtype="float64")
    atoms = emt_frames(1, seed=5)[1]  # a rattled CH4
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert np.isfinite(e) and f.shape == (5, 3)
    assert calc.results["energy_std"] > 0
    assert "forces_std" not in calc.results  # a backward pass per member: only when asked
    spread = calc.get_property("forces_std", atoms)
    assert spread.shape == (5, 3) and (spread > 0).any()
    np.testing.assert_allclose(calc.results["forces"], f, atol=1e-9)
    assert len(calc.results["energies"]) == 2
    np.testing.assert_allclose(e, calc.results["energies"].mean())
    # forces are -dE/dx (central differences)
    np.testing.assert_allclose(f, finite_difference_forces(atoms, calc, 1e-4), atol=1e-5)
    # translation and rotation invariance
    moved = atoms.copy()
    moved.positions += [1.7, -3.2, 0.4]
    moved.rotate(37, "z", center="COM")
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(e, abs=1e-8)
    # the reference energies subtracted in training are added back
    cfg = registry.show_model(ref)["config"]
    refs = sum(cfg["reference_energies_ev"][s] for s in atoms.get_chemical_symbols())
    assert refs == pytest.approx(-1.5 + 4 * -0.5)
    # float32 (the default) agrees
    calc32 = NNPCalculator.from_registry(ref, registry)
    a32 = atoms.copy()
    a32.calc = calc32
    assert a32.get_potential_energy() == pytest.approx(e, abs=1e-3)
    # an element the model lacks is refused by name
    cu = molecule("H2O")
    cu.numbers[0] = 29
    cu.calc = calc
    with pytest.raises(BadInput, match="Cu"):
        cu.get_potential_energy()


def test_calculator_periodic_cell_lattice_shift_and_stress(registry, client, cache):
    from ase.build import molecule

    from pipelines.training.calculator import NNPCalculator

    make_dataset(registry)
    ref = train(registry, client, epochs=2)["model"]
    calc = NNPCalculator.from_registry(ref, registry, dtype="float64")
    box = molecule("CH4")
    box.cell = [5.0, 5.5, 6.0]
    box.pbc = True
    box.center()
    box.calc = calc
    e = box.get_potential_energy()
    stress = box.get_stress()
    assert stress.shape == (6,) and np.isfinite(stress).all()
    shifted = box.copy()
    shifted.positions[1] += box.cell[0] - box.cell[2]
    shifted.calc = calc
    assert shifted.get_potential_energy() == pytest.approx(e, abs=1e-9)
    np.testing.assert_allclose(shifted.get_forces(), box.get_forces(), atol=1e-9)
    # stress against a finite strain derivative of the energy
    eps, i = 1e-5, 0
    d = np.eye(3)
    d[i, i] += eps
    plus = box.copy()
    plus.set_cell(box.cell @ d, scale_atoms=True)
    plus.calc = calc
    d[i, i] -= 2 * eps
    minus = box.copy()
    minus.set_cell(box.cell @ d, scale_atoms=True)
    minus.calc = calc
    fd = (plus.get_potential_energy() - minus.get_potential_energy()) / (2 * eps) \
        / box.get_volume()
    assert stress[i] == pytest.approx(fd, abs=1e-6)


def test_periodic_training_and_replicated_cell(registry, client, cache):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from pipelines.training.calculator import NNPCalculator
    from pipelines.training.data import training_data

    frames = []
    for k in range(16):
        a = bulk("Cu", "fcc", a=3.6, cubic=True) if k % 2 else \
            bulk("Cu", "fcc", a=3.55 + 0.03 * (k % 3))
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
        frames.append(a)
    registry.ingest(frames, LEVEL)
    registry.create_dataset_version("mols", levels=[LEVEL], split="0.7,0.15,0.15",
                                    group_by="none")
    data = training_data(registry.materialize("mols"))
    # a batch shares one cell: one group per distinct cell and size
    assert all(g.pbc is not None for g in data.groups) and len(data.groups) == 4
    ref = train(registry, client, epochs=3)["model"]
    calc = NNPCalculator.from_registry(ref, registry, dtype="float64")
    one = frames[1].copy()
    one.calc = calc
    big = one.repeat((2, 2, 2))
    big.calc = calc
    assert big.get_potential_energy() == pytest.approx(8 * one.get_potential_energy(),
                                                       abs=1e-9)
    np.testing.assert_allclose(big.get_forces()[:len(one)], one.get_forces(), atol=1e-9)


# ---------------------------------------------------------------------------- bad input
def _no_energy_dataset(reg):
    from registry.io.atoms import atoms_to_batch

    batch, _ = atoms_to_batch(emt_frames(4), LEVEL)
    batch.labels[LEVEL].energy = None
    reg.ingest(batch)
    reg.create_dataset_version("mols", levels=[LEVEL], split="0.7,0.15,0.15",
                               group_by="none")


@pytest.mark.parametrize("case, kwargs, message", [
    ("no-forces", {"forces_weight": 1.0}, "no forces in its training split"),
    ("arch", {"arch": "schnet"}, "--arch 'schnet': expected one of ani, hipnn"),
    ("hipnn-key", {"arch": "hipnn", "config": {"hidden": [8]}},
     "unknown config key(s) 'hidden' for --arch hipnn"),
    ("cuda", {"device": "cuda"}, "--device cuda: torch sees no CUDA GPU"),
    ("device", {"device": "tpu"}, "--device 'tpu': expected one of auto, cpu, cuda"),
    ("config-key", {"config": {"hiden": [8]}}, "unknown config key(s) 'hiden'"),
    ("config-value", {"config": {"hidden": [0]}}, "hidden must be a list of positive"),
    ("ensemble", {"ensemble": 0}, "--ensemble"),
    ("name", {"name": "bad:name"}, "invalid model name"),
    ("no-energy", {}, "has no energies in its training split"),
])
def test_bad_input_registers_nothing(registry, client, cache, case, kwargs, message):
    from registry.errors import BadInput

    if case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    if case == "no-energy":
        _no_energy_dataset(registry)
    else:
        make_dataset(registry, forces=case != "no-forces")
    before = (counts(registry), n_models(registry), len(registry.list_runs(kind="train")))
    args = {"config": dict(SMALL), "epochs": 1, **kwargs}
    with pytest.raises(BadInput) as exc:
        train(registry, client, **args)
    assert message in str(exc.value)
    assert (counts(registry), n_models(registry),
            len(registry.list_runs(kind="train"))) == before


def test_config_file_json_and_yaml(tmp_path):
    from pipelines.training.ani import check_config, read_config
    from registry.errors import BadInput

    (tmp_path / "c.json").write_text(json.dumps({"hidden": [8, 8], "lr": 0.01}))
    (tmp_path / "c.yaml").write_text("hidden: [8, 8]\nlr: 0.01\n")
    assert read_config(tmp_path / "c.json") == read_config(tmp_path / "c.yaml")
    assert check_config(read_config(tmp_path / "c.yaml"))["hidden"] == [8, 8]
    (tmp_path / "bad.yaml").write_text("hidden: [8\n")
    with pytest.raises(BadInput, match="is not valid"):
        read_config(tmp_path / "bad.yaml")
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(BadInput, match="expected a .json, .yaml or .yml"):
        read_config(tmp_path / "c.toml")
    with pytest.raises(BadInput, match="does not exist"):
        read_config(tmp_path / "missing.json")


def test_failing_member_records_failed_run_and_no_version(registry, client, cache):
    make_dataset(registry)
    with pytest.raises(Exception, match="loss became"):
        train(registry, client, config={**SMALL, "lr": 1e30})
    runs = registry.list_runs(kind="train")
    assert runs[0]["status"] == "failed" and "loss became" in runs[0]["error"]
    assert n_models(registry) == 0


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def train_cli():
    """``nnp train`` and ``nnp evaluate`` on the app for this test only, unless
    ``pipelines.cli`` registers them itself (other tests compare the app with docs/cli.md)."""
    from pipelines.cli._app import app

    before = list(app.registered_commands)
    import pipelines.cli.train as mod  # registers them on first import

    present = {c.callback for c in app.registered_commands}
    for name, fn in (("train", mod.train), ("evaluate", mod.evaluate)):
        if fn not in present:
            app.command(name)(fn)
    yield
    app.registered_commands[:] = before


def test_cli_train_and_evaluate(registry, nnp, capsys, cache, tmp_path, train_cli):
    make_dataset(registry)
    # Close the fixture's connections first: a second engine on the same SQLite file reads
    # its header with open()/close(), which drops this process's SQLite locks, and a
    # training worker process could then delete the WAL under them (registry/store/engine.py)
    registry.engine.dispose()
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(SMALL))
    assert nnp("train", "--dataset", "mols", "--ensemble", "2", "--epochs", "3",
               "--config", cfg, "--device", "cpu", "--name", "cli-ani", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "cli-ani:1" and isinstance(out["run_id"], int)
    assert set(out["metrics"]) == {"train", "val", "test"}
    assert "forces_mae_ev_per_a" in out["metrics"]["test"]
    assert len(out["members"]) == 2
    png = tmp_path / "parity.png"
    assert nnp("evaluate", "cli-ani:1", "--dataset", "mols", "--split", "all", "-o", png,
               "--device", "cpu", "--json") == 0
    ev = json.loads(capsys.readouterr().out)
    assert set(ev["metrics"]) == {"train", "val", "test"}
    # scored as totals against the same labels: the training metrics again
    for split in ("train", "test"):
        assert ev["metrics"][split]["energy_mae_ev"] == pytest.approx(
            out["metrics"][split]["energy_mae_ev"], rel=1e-5)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert registry.get_run(ev["run_id"])["kind"] == "evaluate"
    before = (counts(registry), n_models(registry))
    assert nnp("train", "--dataset", "mols", "--arch", "schnet") == 2
    assert "expected one of ani, hipnn" in capsys.readouterr().err
    assert nnp("train", "--dataset", "mols", "--config", tmp_path / "none.json") == 2
    assert "does not exist" in capsys.readouterr().err
    assert (counts(registry), n_models(registry)) == before
