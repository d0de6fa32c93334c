"""Verification checks of model versions (#16 item 6), stored with the version.

Three layers: the checks themselves on plain ASE calculators (a smooth Lennard-Jones passes;
one deliberately broken calculator per check fails exactly that check); the registry side on
both backends without torch (record_verification, what it refuses, pull --strict, show,
list); and a tiny trained torchani ensemble end to end on both backends: it passes every check
through `nnp models verify`, and a version of the same weights whose forces are broken fails
the force check and is refused by `pull --strict`.
"""

from __future__ import annotations

import json
import os
import warnings

import helpers
import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from sqlalchemy import func, select

from registry.errors import BadInput, Conflict
from registry.models.pull import FailedVerificationWarning
from registry.store.schema import ModelVersion, Run, RunEntity

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"
SMALL = {"hidden": [16, 16], "radial_shifts": 8, "angular_shifts": 4, "batch_size": 16}
ELEMENTS = ["H", "C"]
RC = 2.5  # Å, the Lennard-Jones cutoff


# ---------------------------------------------------------------- the checks on ASE calculators
class Broken(Calculator):
    """A smooth Lennard-Jones with one defect (``kind``), each aimed at one check."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, kind: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.inner = LennardJones(sigma=1.0, epsilon=0.1, rc=RC, smooth=True)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.inner
        e, f, p = a.get_potential_energy(), a.get_forces().copy(), self.atoms.positions
        if self.kind == "forces":  # forces that are not the energy's gradient
            f *= 1.05
        elif self.kind == "field":  # an energy that depends on where the molecule is
            e += 0.01 * p[:, 0].sum()
            f[:, 0] -= 0.01
        elif self.kind == "curl":  # a non-conservative force field: heats NVE without end
            f[:, 0] -= 0.5 * p[:, 1]
            f[:, 1] += 0.5 * p[:, 0]
        elif self.kind == "step":  # an energy step at the cutoff
            d = np.linalg.norm(p[:, None] - p[None], axis=-1)
            e += 0.001 * ((d < RC) & (d > 0)).sum() / 2
        self.results = {"energy": e, "forces": f}


@pytest.fixture(scope="module")
def clusters():
    from pipelines.training.verify import built_structures

    return built_structures(ELEMENTS, 3, seed=0)


def checks(calc, structures, **kw):
    from pipelines.training.verify import run_checks

    return run_checks(calc, structures, elements=ELEMENTS, cutoffs=[RC], **kw)


def test_smooth_potential_passes_every_check(clusters):
    out = checks(Broken(), clusters)
    assert out["passed"] and set(out["checks"]) == {
        "forces", "invariance", "nve_drift", "cutoff_energy_jump", "cutoff_force_jump"}
    for c in out["checks"].values():
        assert set(c) == {"label", "value", "threshold", "passed", "unit", "details"}
        assert c["passed"] and 0 <= c["value"] < c["threshold"] / 10
    assert out["checks"]["invariance"]["details"]["permutation"] is not None
    json.dumps(out, allow_nan=False)  # storable as is


@pytest.mark.parametrize("calc, failing", [
    (Broken("forces"), {"forces"}),
    (Broken("field"), {"invariance"}),
    (Broken("curl"), {"forces", "nve_drift"}),
    (Broken("step"), {"cutoff_energy_jump"}),
    # ASE's plain Lennard-Jones: energy shifted to 0 at rc, force cut off there
    (LennardJones(sigma=1.0, epsilon=0.1, rc=RC), {"cutoff_force_jump"}),
], ids=["forces", "field", "curl", "step", "hard-cutoff"])
def test_each_defect_fails_its_check(clusters, calc, failing):
    out = checks(calc, clusters)
    assert not out["passed"]
    assert {k for k, c in out["checks"].items() if not c["passed"]} == failing


def test_thresholds_are_configurable_and_checked(clusters):
    from pipelines.training.verify import THRESHOLDS, check_thresholds

    # a 5 % force error passes only under a threshold loose enough for it
    out = checks(Broken("forces"), clusters, thresholds={"forces_rtol": 0.2},
                 settings={"nve_steps": 10})
    assert out["checks"]["forces"]["passed"] and out["thresholds"]["forces_rtol"] == 0.2
    assert out["settings"]["nve_steps"] == 10
    assert check_thresholds(None) == THRESHOLDS
    for bad, msg in (({"force": 1}, "unknown verification threshold 'force'"),
                     ({"invariance": 0}, "must be positive"),
                     ({"invariance": float("nan")}, "must be positive and finite"),
                     ({"invariance": "x"}, "must be a number")):
        with pytest.raises(BadInput, match=msg):
            check_thresholds(bad)
    with pytest.raises(BadInput, match="setting nve_steps must be a positive int"):
        checks(Broken(), clusters, settings={"nve_steps": 2.5})


# ---------------------------------------------------------------- the registry side (no torch)
def fake_results(passed=True, value=0.3):
    checks = {"forces": {"label": "forces vs −∇E", "value": 1e-5 if passed else value,
                         "threshold": 0.01, "passed": passed, "unit": "eV/Å"},
              "invariance": {"label": "energy invariance", "value": 1e-12, "threshold": 1e-6,
                             "passed": True, "unit": "eV/atom"}}
    return {"passed": passed, "checks": checks, "seed": 0}


def register(reg, name="pot"):
    w = {"w": np.arange(4, dtype=np.float32)}
    return reg.register_model(name, w, architecture="ani", elements=["H"], cutoff=5.2)


def n_rows(reg) -> tuple:
    with reg.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Run, RunEntity))


def test_record_verification_and_strict_pull(registry, nnp, capsys, tmp_path):
    register(registry)
    register(registry)
    # never verified: a strict pull refuses, a plain one does not mind
    with pytest.raises(Conflict, match=r"pot:1 has not been verified.*refused: strict"):
        registry.pull_model("pot:1", strict=True)
    assert registry.pull_model("pot:1").ref == "pot:1"
    assert registry.show_model("pot:1")["verified"] is None

    ok = registry.record_verification("pot@latest", fake_results(True))
    assert ok["ref"] == "pot:2" and ok["passed"] is True
    bad = registry.record_verification("pot:1", {**fake_results(False), "passed": True})
    assert bad["passed"] is False  # computed from the checks, not taken from the caller
    assert registry.pull_model("pot:2", strict=True).ref == "pot:2"
    msg = r"model pot:1 failed verification: forces vs −∇E 0.3 > 0.01 eV/Å; refused: strict"
    with pytest.raises(Conflict, match=msg):
        registry.pull_model("pot:1", strict=True)
    with pytest.warns(FailedVerificationWarning, match="pot:1 failed verification"):
        registry.pull_model("pot:1")
    # stored with the version; the status stays ready; each record is a verify run
    shown = registry.show_model("pot:1")
    assert shown["status"] == "ready" and shown["verified"] is False
    rec = shown["metrics"]["verification"]
    assert rec["content_hash"] == shown["content_hash"] and rec["run_id"] == bad["run_id"]
    run = registry.get_run(bad["run_id"])
    assert run["kind"] == "verify" and run["status"] == "ok"
    assert run["result"] == {"model": "pot:1", "passed": False, "failed": ["forces"]}
    assert [(e["entity_type"], e["ref"]) for e in run["inputs"]] == [("model_version", "pot:1")]
    assert [v["verified"] for v in registry.list_model_versions("pot")] == [True, False]
    # a second verification replaces the first on the row; both runs stay
    again = registry.record_verification("pot:1", fake_results(True))
    assert registry.show_model("pot:1")["verified"] is True and again["run_id"] != bad["run_id"]
    assert registry.get_run(bad["run_id"])["kind"] == "verify"

    # the CLI: show prints the checks, --json has them, pull --strict refuses
    registry.record_verification("pot:1", fake_results(False))
    assert nnp("models", "show", "pot:1") == 0
    out = capsys.readouterr().out
    assert "verified: FAILED" in out and "forces vs −∇E" in out and "FAILED" in out
    assert nnp("models", "show", "pot:1", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] is False
    assert data["metrics"]["verification"]["checks"]["forces"]["value"] == 0.3
    assert nnp("models", "pull", "pot:1", "--strict", "-o", tmp_path / "p") == 2
    assert "failed verification: forces vs −∇E 0.3 > 0.01 eV/Å; refused: strict" in \
        capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert nnp("models", "pull", "pot:1", "-o", tmp_path / "p") == 0
    assert "failed verification" in capsys.readouterr().err
    assert nnp("models", "pull", "pot:2", "--strict", "-o", tmp_path / "q", "--json") == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert nnp("models", "list", "pot") == 0
    assert "FAILED" in capsys.readouterr().out

    # a bundle's verification is not trusted here: the imported version starts unverified
    registry.export_model("pot:2", tmp_path / "pot.nnp.zip")
    imported = registry.import_model(tmp_path / "pot.nnp.zip", name="copy")
    assert imported["verified"] is None
    assert imported["metrics"]["source_verification"]["passed"] is True
    with pytest.raises(Conflict, match="copy:1 has not been verified"):
        registry.pull_model("copy:1", strict=True)


@pytest.mark.parametrize("results, message", [
    ([], "must be a mapping"),
    ({}, "non-empty 'checks' mapping"),
    ({"checks": {}}, "non-empty 'checks' mapping"),
    ({"checks": {"f": 1}}, "must be a mapping"),
    ({"checks": {"f": {"value": 1, "threshold": 2}}}, "'passed' must be true or false"),
    ({"checks": {"f": {"value": 1, "threshold": None, "passed": True}}},
     "threshold must be a finite number"),
    ({"checks": {"f": {"value": float("nan"), "threshold": 1, "passed": False}}},
     "value must be a finite number or null"),
    ({"checks": {"f": {"value": 3, "threshold": 1, "passed": True}}},
     "says passed but its value 3 is not within its threshold 1"),
    ({"checks": {"f": {"value": None, "threshold": 1, "passed": True}}}, "says passed"),
    ({"checks": {"f": {"value": 0, "threshold": 1, "passed": True}}, "x": object()},
     "not JSON-serialisable"),
])
def test_bad_results_are_refused_and_write_nothing(registry, results, message):
    register(registry)
    before = (n_rows(registry), registry.show_model("pot:1")["metrics"])
    with pytest.raises(BadInput, match=message):
        registry.record_verification("pot:1", results)
    assert (n_rows(registry), registry.show_model("pot:1")["metrics"]) == before


def test_register_cannot_forge_a_verification(registry):
    with pytest.raises(BadInput, match="'verification' is reserved"):
        registry.register_model("pot", {"w": np.zeros(2)}, architecture="ani",
                                metrics={"verification": {"passed": True}})
    assert registry.list_models() == []
    # a record from another verify run must exist
    register(registry)
    with pytest.raises(Exception, match="no run with id 999999"):
        registry.record_verification("pot:1", fake_results(), run=999999)
    with registry.session() as s:
        assert s.scalar(select(ModelVersion.metrics)) is None


# ---------------------------------------------------------------- a trained model, end to end

def emt_frames(n_per_molecule: int = 10, seed: int = 0):
    return helpers.emt_frames(n_per_molecule, seed)






def test_trained_model_passes_and_broken_forces_are_refused(registry, client, cache, nnp,
                                                            capsys, monkeypatch, tmp_path):
    from pipelines.training.calculator import NNPCalculator
    from pipelines.training.ensemble import train
    from pipelines.training.verify import verify

    registry.ingest(emt_frames(), LEVEL)
    registry.set_reference_energies(LEVEL, {"H": -0.5, "C": -1.5, "N": -2.0, "O": -2.5})
    registry.create_dataset_version("mols", levels=[LEVEL], split="0.7,0.15,0.15",
                                    group_by="none")
    out = train(registry, "mols", ensemble=2, epochs=5, patience=10, config=dict(SMALL),
                device="cpu", name="ani", client=client)
    ref = out["model"]  # training verifies what it registers
    assert out["verification"]["passed"] is True
    assert registry.show_model(ref)["verified"] is True
    assert [r["kind"] for r in registry.list_runs()][:2] == ["verify", "train"]

    # the real model: every check passes, through the command line
    assert nnp("models", "verify", ref, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ref"] == "ani:1" and out["passed"] is True
    assert out["source"] == "mols:1 test split" and len(out["structures"]) == 3
    assert out["dtype"] == "float64"
    for c in out["checks"].values():
        assert c["passed"] and c["value"] is not None
    assert out["checks"]["cutoff_energy_jump"]["details"]["cutoffs"] == [3.5, 5.2]
    assert nnp("models", "show", ref, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["verified"] is True
    assert shown["metrics"]["verification"]["checks"] == out["checks"]
    assert "test" in shown["metrics"]  # the training metrics are still there
    run = registry.get_run(out["run_id"])
    assert run["kind"] == "verify" and run["status"] == "ok" and run["params"]["model"] == ref
    assert {(e["entity_type"], e["ref"]) for e in run["inputs"]} == {
        ("model_version", "ani:1"), ("dataset_version", "mols:1")}
    assert registry.pull_model(ref, strict=True).ref == "ani:1"

    # the same weights registered again, checked by a calculator whose forces are 5 % off
    pulled = registry.pull_model(ref)
    v2 = registry.register_model("ani", [pulled.blobs[f] for f in pulled.weight_files()],
                                 architecture="ani", config=pulled.config,
                                 elements=pulled.info["elements"], cutoff=5.2)["ref"]
    real = NNPCalculator.calculate

    def off(self, atoms=None, properties=("energy",), system_changes=all_changes):
        real(self, atoms, properties, system_changes)
        if "forces" in self.results:
            self.results["forces"] = self.results["forces"] * 1.05

    with monkeypatch.context() as m:
        m.setattr(NNPCalculator, "calculate", off)
        res = verify(registry, "ani@latest", settings={"nve_steps": 20})
    assert res["ref"] == v2 == "ani:2" and res["passed"] is False
    assert res["source"] == "built from the model's elements"  # v2 names no dataset version
    assert not res["checks"]["forces"]["passed"]
    assert res["checks"]["invariance"]["passed"]
    assert nnp("models", "pull", v2, "--strict", "-o", tmp_path / "v2") == 2
    err = capsys.readouterr().err
    assert "ani:2 failed verification: forces vs −∇E" in err and "refused: strict" in err
    with pytest.raises(Conflict, match="failed verification"):
        NNPCalculator.from_registry(v2, registry, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.pull_model(ref, strict=True).ref == "ani:1"


def test_verify_refuses_bad_input_before_any_work(registry, nnp, capsys, cache):
    from ase.build import molecule

    from pipelines.training.verify import verify

    register(registry, "radial")  # registered by hand: no config to rebuild it from
    before = n_rows(registry)
    for kwargs, msg in (({"thresholds": {"forces": 1}}, "unknown verification threshold"),
                        ({"device": "tpu"}, "--device 'tpu'"),
                        ({"structures": []}, "structures is empty"),
                        ({"structures": [molecule("H2O")]}, "handles H; the structures have O"),
                        ({}, "no stored config")):
        with pytest.raises(BadInput, match=msg):
            verify(registry, "radial:1", **kwargs)
    assert nnp("models", "verify", "nope:1") == 2
    assert "nope" in capsys.readouterr().err
    assert nnp("models", "verify", "radial:1", "-t", "forces_atol") == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert n_rows(registry) == before
