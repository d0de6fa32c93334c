"""Training: checkpoints and --resume, transfer learning (--from/--freeze), Δ-learning at
inference, and Δ + transfer. Small EMT data from tests/test_training.py; an in-process Dask
cluster (threads: each task still opens its own registry connection)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import test_training as tt
from helpers import counts, emt_frames, finite_difference_forces
from test_training import LEVEL, SMALL, make_dataset, n_models

# the CLI fixture of tests/test_training.py (client and cache come from conftest.py)
train_cli = tt.train_cli

FAST = {**SMALL, "checkpoint_every": 2}


def train(reg, client, dataset="mols", **kw):
    from pipelines.training.ensemble import train as run

    args = {"ensemble": 2, "epochs": 6, "patience": 10, "config": dict(FAST),
            "device": "cpu", "verify": False, **kw}
    return run(reg, dataset, client=client, **args)


def blobs(reg, ref):
    p = reg.pull_model(ref)
    return [p.blobs[f] for f in p.weight_files()]


def state_dicts(reg, ref):
    from pipelines.training.torch_io import load_state_dicts

    return load_state_dicts(reg.pull_model(ref))


# ---------------------------------------------------------------------------- resume
def test_resume_after_a_kill_gives_the_uninterrupted_weights(registry, client, cache,
                                                             monkeypatch):
    from pipelines.training import loop
    from pipelines.training.ensemble import latest_checkpoints, resume
    from registry.errors import BadInput

    make_dataset(registry)
    straight = train(registry, client, name="m", seed=7)
    run = registry.get_run(straight["run_id"])
    ck = [e for e in run["outputs"] if e["entity_type"] == "checkpoint"]
    # every 2 epochs (2, 4, 6; 6 is also the last) for each member
    assert sorted((e["meta"]["member"], e["meta"]["epoch"]) for e in ck) == \
        [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6)]
    assert all(e["meta"]["done"] == (e["meta"]["epoch"] == 6) for e in ck)

    # both members reach epoch 3 (their epoch-2 checkpoints written) before either dies: on
    # a loaded machine one member's failure could otherwise end the run before the other
    # member wrote its checkpoint
    both_at_3 = threading.Barrier(2, timeout=120)

    def kill(seed, epoch):
        if epoch == 3:
            both_at_3.wait()
            raise RuntimeError("simulated kill")

    monkeypatch.setattr(loop, "_epoch_hook", kill)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(registry, client, name="m", seed=7)
    monkeypatch.setattr(loop, "_epoch_hook", None)
    killed = registry.list_runs(kind="train")[0]
    assert killed["status"] == "failed" and n_models(registry) == 1
    latest = latest_checkpoints(registry.get_run(killed["id"]))
    assert {k: c["epoch"] for k, c in latest.items()} == {0: 2, 1: 2}
    out = resume(registry, killed["id"], client=client)
    assert out["model"] == "m:2" and out["resumed_from"] == killed["id"]
    assert [m["resumed_at"] for m in out["members"]] == [2, 2]
    assert blobs(registry, "m:2") == blobs(registry, "m:1")  # byte-identical
    new = registry.get_run(out["run_id"])
    assert new["params"]["resumed_from"] == killed["id"] and new["status"] == "ok"
    assert any(e["entity_type"] == "run" and e["entity_id"] == killed["id"]
               for e in new["inputs"])
    assert registry.get_run(killed["id"])["status"] == "failed"  # the old run stays as it was
    before = (counts(registry), n_models(registry))
    with pytest.raises(BadInput, match=f"run {out['run_id']} already finished"):
        resume(registry, out["run_id"], client=client)
    with pytest.raises(BadInput, match=f"already resumed by run {out['run_id']}"):
        resume(registry, killed["id"], client=client)  # no second version from one kill
    assert [r["id"] for r in registry.runs_consuming("run", killed["id"])] == [out["run_id"]]
    ingest_run = registry.list_runs(kind="ingest")[0]["id"]
    with pytest.raises(BadInput, match="continues 'train' runs"):
        resume(registry, ingest_run, client=client)
    assert (counts(registry), n_models(registry)) == before


def test_checkpoint_round_trip_is_exact():
    import torch

    from pipelines.training.ani import check_config, new_member
    from pipelines.training.loop import read_checkpoint, write_checkpoint

    cfg = check_config({"hidden": [4]})
    cfg["elements"] = ["H", "O"]
    m = new_member(cfg, 0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step(1.0)
    rng = np.random.default_rng(3)
    rng.random(5)
    data = write_checkpoint(m, opt, sched, rng, m.state_dict(),
                            {"epoch": 4, "done": False, "best": 0.5, "best_epoch": 3,
                             "waited": 1, "curve": [{"epoch": 1}]})
    back = read_checkpoint(data)
    assert back["state"]["epoch"] == 4 and back["state"]["rng"] == rng.bit_generator.state
    for k, v in m.state_dict().items():
        assert torch.equal(back["model"][k], v) and torch.equal(back["best"][k], v)
    opt2 = torch.optim.AdamW(m.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    for p in m.parameters():
        a, b = opt.state[p], opt2.state[p]
        assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a), (a, b)
    assert b"pickle" not in data[:64]


# ---------------------------------------------------------------------------- transfer
HI = "emt-hi"


def hi_frames(names=("H2O", "CH4"), n=10, seed=11, scale=1.05):
    """A 'higher' level: EMT energies and forces scaled, on a subset of the molecules."""
    hill = {"H2O": "H2O", "CH4": "CH4", "NH3": "H3N"}
    wanted = {hill[m] for m in names}
    out = []
    for a in emt_frames(n, seed=seed):
        if a.get_chemical_formula(mode="hill") in wanted:
            a.info["energy"] *= scale
            a.arrays["forces"] = a.arrays["forces"] * scale
            out.append(a)
    return out


def make_hi(reg, name="hi", **kw):
    reg.ingest(hi_frames(**kw), HI)
    return reg.create_dataset_version(name, levels=[HI], split="0.7,0.15,0.15",
                                      group_by="none")


FIRST = "*.layers.0.*"


def test_transfer_starts_from_the_parent_freezes_and_records(registry, client, cache, nnp,
                                                             capsys):
    make_dataset(registry)
    parent = train(registry, client, name="base", epochs=3)["model"]
    make_hi(registry)
    out = train(registry, client, dataset="hi", name="fine", ensemble=3, epochs=3,
                parent="base@latest", freeze=[FIRST, "re:atomics\\.N\\."],
                config={"lr": 1e-3, "hidden": SMALL["hidden"], "checkpoint_every": 2})
    v = registry.show_model(out["model"])
    assert v["parent"] == parent == "base:1"
    frozen = v["frozen"]
    assert "potentials.nnp.neural_networks.atomics.H.layers.0.weight" in frozen
    assert "potentials.nnp.neural_networks.atomics.N.final_layer.bias" in frozen
    assert "potentials.nnp.neural_networks.atomics.H.final_layer.weight" not in frozen
    assert v["config"]["parent"] == "base:1" and v["config"]["frozen"] == frozen
    assert v["config"]["freeze"] == [FIRST, "re:atomics\\.N\\."]
    assert v["elements"] == ["H", "C", "N", "O"]  # the parent's
    run = registry.get_run(out["run_id"])
    assert run["params"]["from"] == "base:1"
    assert any(e["entity_type"] == "model_version" and e["ref"] == "base:1"
               for e in run["inputs"])
    ps, cs = state_dicts(registry, "base:1"), state_dicts(registry, out["model"])
    for k, child in enumerate(cs):  # member k from parent member k mod 2
        par = ps[k % 2]
        for name in frozen:
            assert np.array_equal(child[name].numpy(), par[name].numpy()), name
        w = "potentials.nnp.neural_networks.atomics.H.final_layer.weight"
        assert not np.array_equal(child[w].numpy(), par[w].numpy())
    # the energy shifter is refitted on the new level, not copied
    assert v["config"]["self_energies_ev"] != \
        registry.show_model("base:1")["config"]["self_energies_ev"]
    lin = registry.lineage(out["model"])
    assert lin["parent"]["ref"] == "base:1"
    assert nnp("lineage", out["model"]) == 0
    assert "parent base:1" in capsys.readouterr().out


@pytest.mark.parametrize("case, kwargs, error, message", [
    ("elements", {"parent": "water:1"}, "BadInput",
     "model water:1 handles H, O; dataset mols:1 has C, N"),
    ("config", {"parent": "base:1", "config": {"hidden": [8]}}, "BadInput",
     "--from base:1 fixes the architecture"),
    ("no-match", {"parent": "base:1", "freeze": ["*.nothing.*"]}, "BadInput",
     "--freeze '*.nothing.*' matches no parameter"),
    ("bad-regex", {"parent": "base:1", "freeze": ["re:("]}, "BadInput",
     "not a regular expression"),
    ("all", {"parent": "base:1", "freeze": ["*"]}, "BadInput", "freezes every parameter"),
    ("no-parent", {"freeze": [FIRST]}, "BadInput", "--freeze needs --from"),
    ("missing", {"parent": "nosuch:1"}, "NotFound", "nosuch"),
])
def test_transfer_bad_input_registers_nothing(registry, client, cache, case, kwargs, error,
                                              message):
    from registry import errors

    make_dataset(registry)
    registry.ingest(hi_frames(("H2O",), n=8), "emt-w")
    registry.create_dataset_version("water", levels=["emt-w"], split="0.7,0.15,0.15",
                                    group_by="none")
    if kwargs.get("parent") == "water:1":
        train(registry, client, dataset="water", name="water", epochs=1, ensemble=1)
    elif kwargs.get("parent") == "base:1":
        train(registry, client, name="base", epochs=1, ensemble=1)
    before = (counts(registry), n_models(registry), len(registry.list_runs(kind="train")))
    with pytest.raises(getattr(errors, error)) as exc:
        train(registry, client, **{"epochs": 1, **kwargs})
    assert message in str(exc.value)
    assert (counts(registry), n_models(registry),
            len(registry.list_runs(kind="train"))) == before


def test_cli_resume_refusals(registry, nnp, capsys, cache, train_cli):
    make_dataset(registry)
    assert nnp("train", "--resume", "1", "--epochs", "3") == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert nnp("train") == 2
    assert "needs --dataset" in capsys.readouterr().err
    assert nnp("train", "--resume", str(10**12)) == 2
    assert f"no run with id {10**12}" in capsys.readouterr().err
    ingest = registry.list_runs(kind="ingest")[0]["id"]
    assert nnp("train", "--resume", str(ingest)) == 2
    assert "continues 'train' runs" in capsys.readouterr().err


# ---------------------------------------------------------------------------- Δ-learning
SHIFTED = "emt-shifted"


def shift(atoms) -> tuple[float, np.ndarray]:
    """A smooth function of the positions (eV) and its forces: 0.3 Σ|r_i − c|², c the
    centroid, standing in for HIGH − LOW."""
    d = atoms.positions - atoms.positions.mean(axis=0)
    return 0.3 * float((d ** 2).sum()), -0.6 * d  # Σ d = 0, so ∂/∂r_i is 0.6 d_i


def make_delta(reg, name="d", n=10, seed=0, molecules=("H2O", "CH4", "NH3")):
    """The same frames at 'emt' and at 'emt-shifted' (= EMT + shift); a Δ version of them
    and, for scoring totals, a plain version at 'emt-shifted'."""
    hill = {"H2O": "H2O", "CH4": "CH4", "NH3": "H3N"}
    frames = [a for a in emt_frames(n, seed=seed)
              if a.get_chemical_formula(mode="hill") in {hill[m] for m in molecules}]
    high = []
    for a in frames:
        b = a.copy()
        de, df = shift(a)
        b.info["energy"] = a.info["energy"] + de
        b.arrays["forces"] = a.arrays["forces"] + df
        high.append(b)
    reg.ingest(frames, LEVEL)
    reg.ingest(high, SHIFTED)
    dv = reg.create_dataset_version(name, levels=[SHIFTED, LEVEL], delta=f"{SHIFTED}-{LEVEL}",
                                    split="0.7,0.15,0.15", group_by="none")
    reg.create_dataset_version(name + "-high", levels=[SHIFTED], split="0.7,0.15,0.15",
                               group_by="none")
    return dv


def test_delta_model_adds_its_base_level_at_inference(registry, client, cache):
    from ase.calculators.emt import EMT

    from pipelines.training.calculator import NNPCalculator
    from pipelines.training.evaluate import evaluate
    from pipelines.training.torch_io import load_state_dicts
    from registry.errors import BadInput

    make_delta(registry)
    out = train(registry, client, dataset="d", name="delta", epochs=3,
                config={**FAST, "dtype": "float64"})
    cfg = registry.show_model(out["model"])["config"]
    assert cfg["delta"] is True and cfg["base_level"] == LEVEL
    assert cfg["target"] == f"{SHIFTED}-{LEVEL}"
    assert cfg["repulsion"] is False  # "auto": the base level holds the repulsion
    calc = NNPCalculator.from_registry("delta", registry, dtype="float64")
    atoms = emt_frames(1, seed=9)[0]  # a rattled H2O
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    ref = atoms.copy()
    ref.calc = EMT()
    assert calc.results["base_energy"] == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    assert e == pytest.approx(calc.results["delta_energy"] + ref.get_potential_energy(),
                              abs=1e-10)
    # forces are -dE/dx of the total (correction + base)
    np.testing.assert_allclose(f, finite_difference_forces(atoms, calc, 1e-5), atol=1e-5)
    # scored on the HIGH version as totals (EMT added) = scored on the Δ version as the
    # correction: the base cancels
    tot = evaluate(registry, "delta", "d-high", split="all", device="cpu")
    cor = evaluate(registry, "delta", "d", split="all", device="cpu")
    assert registry.get_run(tot["run_id"])["result"]["base_level"] == LEVEL

    def overall(m, key):
        return sum(v["n"] * v[key] for v in m.values()) / sum(v["n"] for v in m.values())

    for key in ("energy_mae_ev", "forces_mae_ev_per_a"):
        assert overall(tot["metrics"], key) == pytest.approx(overall(cor["metrics"], key),
                                                             rel=1e-6)
    # a base level without a calculator is refused by name, with the available ones
    members = load_state_dicts(registry.pull_model("delta"))
    with pytest.raises(BadInput, match="base level 'ccsd' has no reference calculator.*"
                                       "available: emt, gfn2-xtb, gfn1-xtb"):
        NNPCalculator({**cfg, "base_level": "ccsd"}, members, name="delta:1")


def test_gfn2_xtb_as_a_base_level(registry, client, cache):
    pytest.importorskip("tblite.ase")
    from ase.build import molecule
    from tblite.ase import TBLite

    from pipelines.training.calculator import NNPCalculator
    from pipelines.training.torch_io import load_state_dicts

    make_delta(registry, n=4, molecules=("H2O",))
    ref = train(registry, client, dataset="d", epochs=1, ensemble=1)["model"]
    cfg = {**registry.show_model(ref)["config"], "base_level": "gfn2-xtb"}
    calc = NNPCalculator(cfg, load_state_dicts(registry.pull_model(ref)), name=ref,
                         dtype="float64")
    atoms = molecule("H2O")
    atoms.calc = calc
    e = atoms.get_potential_energy()
    x = atoms.copy()
    x.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert e == pytest.approx(calc.results["delta_energy"] + x.get_potential_energy(),
                              abs=1e-8)
    assert calc.results["base_energy"] == pytest.approx(x.get_potential_energy(), abs=1e-10)
    assert np.isfinite(atoms.get_forces()).all()


def test_repulsion_auto_is_off_for_delta_versions_only(registry):
    """``repulsion: auto`` (the default) adds torchani's xTB repulsion to plain models and
    leaves it out of Δ models; an explicit value is kept; anything else is refused."""
    from pipelines.training.ani import new_member
    from pipelines.training.ensemble import prepare
    from registry.errors import BadInput

    make_delta(registry, n=4)

    def stored(ref, **config):
        return prepare(registry, ref, ensemble=1, device="cpu", config=config)["config"]

    def has_term(cfg):
        return any("repulsion" in n for n, _ in new_member(cfg, 0).named_modules())

    plain, delta = stored("d-high"), stored("d")
    assert plain["repulsion"] is True and has_term(plain)
    assert delta["repulsion"] is False and not has_term(delta)
    assert stored("d", repulsion=True)["repulsion"] is True
    assert stored("d-high", repulsion=False)["repulsion"] is False
    with pytest.raises(BadInput, match="repulsion must be true or false or auto"):
        stored("d", repulsion="maybe")


def test_output_init_zero_starts_from_the_fitted_shifts(registry, client, cache):
    """``output_init: zero``: a new member's output layers are zero, so it predicts the fitted
    per-element shifts alone; training moves them; other values are refused."""
    import torch

    from pipelines.training.ani import check_config, new_member
    from registry.errors import BadInput

    make_delta(registry, n=6)
    cfg = {**check_config({**FAST, "elements": ["H", "C", "N", "O"], "output_init": "zero",
                           "repulsion": False}),
           "self_energies_ev": {"H": -0.5, "C": -1.0, "N": -2.0, "O": -3.0}}
    member = new_member(cfg, 0, dtype=torch.float64)
    finals = {n: p for n, p in member.named_parameters() if ".final_layer." in n}
    assert finals and all((p == 0).all() for p in finals.values())
    species = torch.tensor([[8, 1, 1]])
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]],
                       dtype=torch.float64)
    energy = member((species, xyz)).energies.item() * 27.211386245988  # Hartree -> eV
    assert energy == pytest.approx(-3.0 - 2 * 0.5, abs=1e-6)  # shifts stored in Hartree
    random = new_member({**cfg, "output_init": "random"}, 0)
    assert any((p != 0).any() for n, p in random.named_parameters() if ".final_layer." in n)
    out = train(registry, client, dataset="d-high", name="z", epochs=3,
                config={**FAST, "output_init": "zero"})
    assert registry.show_model(out["model"])["config"]["output_init"] == "zero"
    trained = state_dicts(registry, out["model"])[0]
    assert any(v.abs().sum() > 0 for k, v in trained.items() if ".final_layer." in k)
    with pytest.raises(BadInput, match="output_init 'ones'"):
        check_config({"output_init": "ones"})


def test_delta_and_transfer_combine(registry, client, cache):
    """Pretrain on one Δ version, fine-tune on another with the same base level."""
    make_delta(registry, name="pre", n=8, seed=1)
    pre = train(registry, client, dataset="pre", name="pre", epochs=2)["model"]
    make_delta(registry, name="fine", n=6, seed=2, molecules=("H2O", "CH4"))
    out = train(registry, client, dataset="fine", name="fine", epochs=2, parent=pre,
                freeze=[FIRST])
    v = registry.show_model(out["model"])
    assert v["parent"] == pre and v["frozen"]
    assert v["config"]["delta"] is True and v["config"]["base_level"] == LEVEL
    assert registry.lineage(out["model"])["parent"]["ref"] == pre
