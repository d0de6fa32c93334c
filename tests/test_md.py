"""MD with a registered model (``nnp md`` and :func:`pipelines.simulation.dynamics.run_md`),
on both backends: frames and energy_std written, the run in provenance with its edges, the
early stops, bad input refused before any work, Ctrl-C keeping the frames.

The model: a 2-member torchani ensemble trained for 2 epochs on 30 EMT-labelled frames of
H2O, CH4 and NH3 (an in-process Dask cluster; each task opens its own registry connection).
"""

from __future__ import annotations

import os

import helpers
import numpy as np
import pytest

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"
SMALL = {"hidden": [8], "radial_shifts": 4, "angular_shifts": 2, "angular_sections": 2,
         "batch_size": 16}



def emt_frames(n_per_molecule: int = 10, seed: int = 0):
    return helpers.emt_frames(n_per_molecule, seed, scale=0.05)


@pytest.fixture
def nnp(nnp):
    """The CLI with ``nnp md`` on the app for this test only, unless ``pipelines.cli``
    registers it itself (other tests compare the app with docs/cli.md)."""
    from pipelines.cli._app import app

    before = list(app.registered_commands)
    import pipelines.cli.md as mod  # registers it on first import

    if mod.md not in {c.callback for c in app.registered_commands}:
        app.command("md")(mod.md)
    yield nnp
    app.registered_commands[:] = before




@pytest.fixture
def model(registry, client, tmp_path, monkeypatch):
    """A trained 2-member model aliased ``mols-ani@production``; returns its NAME:V."""
    from pipelines.training.ensemble import train

    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NNP_DASK_SCHEDULER", raising=False)
    registry.ingest(emt_frames(), LEVEL)
    registry.create_dataset_version("mols", levels=[LEVEL], split="0.8,0.1,0.1",
                                    group_by="none")
    out = train(registry, "mols", ensemble=2, epochs=2, patience=5, config=dict(SMALL),
                device="cpu", client=client, name="mols-ani", verify=False)
    registry.set_model_alias(out["model"], "production")
    return out["model"]


def write(tmp_path, atoms, name="start.extxyz"):
    import ase.io

    path = tmp_path / name
    ase.io.write(path, atoms, format="extxyz")
    return path


def settings(**kw):
    from pipelines.simulation.dynamics import MDSettings

    return MDSettings(**{"steps": 20, "temperature_k": 300.0, "interval": 5, **kw})


def test_md_writes_frames_with_energy_std_and_records_the_run(registry, model, tmp_path):
    import ase.io
    from ase.build import molecule

    from pipelines.simulation.dynamics import file_sha256, run_md

    start = write(tmp_path, molecule("CH4"))
    out = tmp_path / "traj.extxyz"
    seen = []
    res = run_md(registry, "mols-ani@production", start, out, settings(),
                 on_step=lambda s, n, info: seen.append((s, n)))
    assert (res.model, res.steps_done, res.frames, res.stop_reason) == (model, 20, 5, None)
    assert seen[0] == (0, 20) and seen[-1] == (20, 20)
    frames = ase.io.read(out, index=":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    for f in frames:
        assert f.info["energy_std"] > 0 and np.isfinite(f.get_potential_energy())
        assert f.get_forces().shape == (5, 3) and f.info["model"] == model
    assert frames[-1].info["time_fs"] == pytest.approx(10.0)
    # the written forces are the model's at that geometry, not FixCom's projection of them
    from pipelines.training.calculator import NNPCalculator

    calc = NNPCalculator.from_registry(model, registry)
    for f in frames[1:]:
        fresh = f.copy()
        fresh.calc = calc
        assert np.allclose(f.get_forces(), fresh.get_forces(), atol=1e-5)
    assert res.mean_energy_std_ev > 0 and res.max_energy_std_ev >= res.mean_energy_std_ev
    assert not list(tmp_path.glob(".traj*"))  # the temporary file was renamed
    run = registry.get_run(res.run_id)
    assert run["kind"] == "md" and run["status"] == "ok"
    ins = {e["entity_type"]: e for e in run["inputs"]}
    assert ins["model_version"]["ref"] == model
    assert ins["model_version"]["sha256"] == registry.show_model(model)["content_hash"]
    assert ins["file"]["ref"] == str(start) and ins["file"]["sha256"] == file_sha256(start)
    [produced] = run["outputs"]
    assert produced["entity_type"] == "file" and produced["ref"] == str(out)
    assert produced["sha256"] == file_sha256(out) == res.sha256
    assert run["result"]["steps_done"] == 20 and run["result"]["stop_reason"] is None
    assert run["result"]["mean_energy_std_ev"] == pytest.approx(res.mean_energy_std_ev)
    assert run["params"]["temperature_k"] == 300.0 and run["params"]["model"] == model

    # same seed, same trajectory; an existing output needs overwrite
    from registry.errors import BadInput

    with pytest.raises(BadInput, match="exists"):
        run_md(registry, model, start, out, settings())
    again = run_md(registry, model, start, out, settings(), overwrite=True)
    assert again.sha256 == res.sha256


def test_md_in_a_periodic_cell(registry, model, tmp_path):
    import ase.io
    from ase.build import molecule

    from pipelines.simulation.dynamics import run_md

    box = molecule("H2O")
    box.cell = [7.0, 7.5, 8.0]
    box.pbc = True
    box.center()
    out = tmp_path / "box.extxyz"
    res = run_md(registry, model, write(tmp_path, box), out, settings(steps=6, interval=3))
    frames = ase.io.read(out, index=":")
    assert res.frames == 3 and all(f.pbc.all() for f in frames)
    np.testing.assert_allclose(frames[-1].cell.lengths(), [7.0, 7.5, 8.0])


def test_min_distance_and_max_force_stop_early(registry, model, tmp_path, nnp, capsys):
    import ase.io
    from ase import Atoms

    from pipelines.simulation.dynamics import run_md

    close = write(tmp_path, Atoms("OH", positions=[[0, 0, 0], [0.3, 0, 0]]), "close.extxyz")
    out = tmp_path / "close-traj.extxyz"
    res = run_md(registry, model, close, out, settings())
    assert res.steps_done == 0 and res.frames == 1
    assert "0.300 Å apart" in res.stop_reason and "--min-distance 0.5" in res.stop_reason
    [frame] = ase.io.read(out, index=":")
    assert "min-distance" in frame.info["stop_reason"]
    run = registry.get_run(res.run_id)
    assert run["status"] == "ok" and "0.300" in run["result"]["stop_reason"]
    assert [e["entity_type"] for e in run["outputs"]] == ["file"]

    # the CLI says so and exits 0: the frames written are a valid trajectory
    out2 = tmp_path / "cli.extxyz"
    capsys.readouterr()
    assert nnp("md", model, "-s", close, "--steps", 10, "-t", 300, "-o", out2) == 0
    text = capsys.readouterr().out
    assert "stopped early at step 0 of 10" in text and "0.300 Å apart" in text

    # a tiny --max-force stops at once too
    from ase.build import molecule

    res = run_md(registry, model, write(tmp_path, molecule("NH3"), "nh3.extxyz"),
                 tmp_path / "f.extxyz", settings(max_force=1e-6))
    assert res.steps_done == 0 and "--max-force" in res.stop_reason


def test_bad_input_is_refused_before_any_work(registry, model, tmp_path, nnp, capsys):
    from ase.build import molecule

    from pipelines.simulation.dynamics import run_md
    from registry.errors import BadInput

    runs = len(registry.list_runs())
    sicl = molecule("SiH4")
    start = write(tmp_path, sicl, "sih4.extxyz")
    out = tmp_path / "never.extxyz"
    with pytest.raises(BadInput, match="the structure has Si"):
        run_md(registry, model, start, out, settings())
    capsys.readouterr()
    assert nnp("md", model, "-s", start, "--steps", 5, "-t", 300, "-o", out) == 2
    assert "Si" in capsys.readouterr().err
    good = write(tmp_path, molecule("H2O"), "h2o.extxyz")
    for args, msg in ((["--steps", 0], "--steps"), (["--timestep", -1], "--timestep"),
                      (["--interval", 0], "--interval"), (["-o", tmp_path / "x.traj"],
                                                          "extxyz"),
                      (["-o", tmp_path / "no" / "x.xyz"], "no such directory"),
                      (["-s", tmp_path / "missing.xyz"], "no such file")):
        base = {"-s": good, "--steps": 5, "-o": out}
        opts = dict(zip(args[::2], args[1::2], strict=True))
        argv = [x for k, v in {**base, **opts}.items() for x in (k, v)]
        assert nnp("md", model, "-t", 300, *argv) == 2, msg
        assert msg in capsys.readouterr().err
    assert nnp("md", "nope@production", "-s", good, "--steps", 5, "-t", 300, "-o", out) == 2
    assert not out.exists() and not list(tmp_path.glob(".never*"))
    assert len(registry.list_runs()) == runs


def test_ctrl_c_keeps_the_frames_written(registry, model, tmp_path, nnp, capsys,
                                         monkeypatch):
    import ase.io
    from ase.build import molecule

    from pipelines.simulation.dynamics import MDInterrupted, run_md
    from pipelines.training.calculator import NNPCalculator

    calls = {"n": 0}
    real = NNPCalculator.calculate

    def calculate(self, *a, **kw):  # Ctrl-C while the 13th force call runs (step 12)
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(NNPCalculator, "calculate", calculate)
    start = write(tmp_path, molecule("H2O"))
    out = tmp_path / "ctrlc.extxyz"
    with pytest.raises(MDInterrupted) as info:
        run_md(registry, model, start, out, settings(steps=50))
    res = info.value.result
    assert (res.steps_done, res.frames, res.last_step_written) == (11, 3, 10)
    assert [f.info["step"] for f in ase.io.read(out, index=":")] == [0, 5, 10]
    run = registry.get_run(res.run_id)
    assert run["status"] == "interrupted" and run["result"]["stop_reason"] == "interrupted"
    assert run["outputs"][0]["ref"] == str(out)

    calls["n"] = 0
    out2 = tmp_path / "ctrlc-cli.extxyz"
    capsys.readouterr()
    assert nnp("md", model, "-s", start, "--steps", 50, "-t", 300, "--interval", 5,
               "-o", out2) == 130
    err = capsys.readouterr().err
    assert f"interrupted: 10 of 50 steps written to {out2}" in err
    assert len(ase.io.read(out2, index=":")) == 3


def test_cli_json_and_the_demo_style_calculator(registry, model, tmp_path, nnp, capsys):
    import json

    from ase.build import molecule

    from pipelines.simulation.dynamics import run_md
    from pipelines.training.calculator import NNPCalculator

    start = write(tmp_path, molecule("NH3"))
    out = tmp_path / "cli.extxyz"
    capsys.readouterr()
    assert nnp("md", "mols-ani@production", "--structure", start, "--steps", 8,
               "--temperature", 200, "--interval", 4, "--seed", 3, "-o", out, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 3 and summary["steps_done"] == 8
    assert summary["model"] == model and summary["stop_reason"] is None
    # a calculator built by from_registry gives the same trajectory
    calc = NNPCalculator.from_registry("mols-ani@production", registry=registry)
    res = run_md(registry, "mols-ani@production", start, tmp_path / "calc.extxyz",
                 settings(steps=8, interval=4, seed=3, temperature_k=200.0),
                 calculator=calc)
    assert res.sha256 == summary["sha256"]
