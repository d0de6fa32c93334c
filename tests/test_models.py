"""Model versions on both backends: register, pull, aliases, retraction, bundles, bad input."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
from sqlalchemy import func, select

from registry.errors import BadInput, Conflict, NotFound
from registry.models.pull import RetractedModelWarning
from registry.store.schema import Model, ModelAlias, ModelFile, ModelVersion, Run, RunEntity


def row_counts(reg) -> tuple:
    """Rows of every table a model write touches, and the number of stored artifacts."""
    with reg.session() as s:
        rows = tuple(s.scalar(select(func.count()).select_from(t))
                     for t in (Model, ModelVersion, ModelFile, ModelAlias, Run, RunEntity))
    root = reg.artifacts.root / "sha256"
    n_obj = sum(len(f) for _, _, f in os.walk(root)) if root.exists() else 0
    return rows + (n_obj,)


def state(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return {"layer.weight": rng.normal(size=(n, 8)).astype(np.float32),
            "layer.bias": rng.normal(size=n), "steps": np.array([seed], dtype=np.int64)}


def test_register_show_pull_roundtrip(registry, tmp_path):
    registry.ensure_level("wb97x/6-31g*")
    members = [state(0), state(1), state(2)]
    info = registry.register_model(
        "ani-h2o", members, architecture="ani", config={"hidden": [16, 8]},
        elements=["O", "H", 1], cutoff=5.2, level="wB97X/6-31G*", metrics={"rmse_e": 0.01},
        frozen=["layer.bias"], extras={"parity.png": b"\x89PNG fake", "notes.txt": b"hi"},
        description="water")
    assert info["ref"] == "ani-h2o:1" and info["n_members"] == 3
    assert info["elements"] == ["H", "O"] and info["level"] == "wb97x/6-31g*"
    assert info["aliases"] == ["latest"] and info["status"] == "ready"
    names = [f["name"] for f in info["files"]]
    assert names == ["member_0.safetensors", "member_1.safetensors", "member_2.safetensors",
                     "notes.txt", "parity.png"]
    shown = registry.show_model("ani-h2o")
    assert shown["content_hash"] == info["content_hash"] and shown["config"] == {
        "hidden": [16, 8]}
    pulled = registry.pull_model("ani-h2o:1")
    for got, want in zip(pulled.members, members, strict=True):
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
            assert got[k].dtype == want[k].dtype
    assert pulled.extras == {"parity.png": b"\x89PNG fake", "notes.txt": b"hi"}
    out = registry.pull_model("ani-h2o@latest", dest=tmp_path / "m").path
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["ref"] == "ani-h2o:1" and len(manifest["files"]) == 5
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(out / "member_1.safetensors")["layer.bias"],
                                  members[1]["layer.bias"])
    run = registry.get_run(info["run_id"])
    assert run["kind"] == "register_model" and run["status"] == "ok"
    assert {"entity_type": "model_version", "entity_id": info["id"]}.items() <= \
        run["outputs"][0].items()
    assert run["git_commit"] is None or len(run["git_commit"]) == 40


def test_weights_as_bytes_and_files_keep_hashes(registry, tmp_path):
    from safetensors.numpy import save, save_file

    raw = save(state(3))
    save_file(state(4), tmp_path / "w.safetensors")
    a = registry.register_model("m", raw, architecture="mlp")
    b = registry.register_model("m", [tmp_path / "w.safetensors", raw], architecture="mlp")
    assert b["version"] == 2 and b["n_members"] == 2
    import hashlib

    assert a["files"][0]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert b["files"][1]["sha256"] == a["files"][0]["sha256"]  # same content, one object
    assert b["files"][0]["sha256"] == hashlib.sha256(
        (tmp_path / "w.safetensors").read_bytes()).hexdigest()


def test_versions_latest_aliases_and_retraction(registry, monkeypatch):
    for k in range(4):
        registry.register_model("pot", state(k), architecture="mlp")
    assert registry.model_alias("pot", "latest") == 4
    monkeypatch.setenv("NNP_USER", "alice")
    moved = registry.set_model_alias("pot:2", "production")
    assert moved["previous_version"] is None and moved["updated_by"] == "alice"
    monkeypatch.setenv("NNP_USER", "bob")
    moved = registry.set_model_alias("pot:3", "production")
    assert moved["previous_version"] == 2 and moved["version"] == 3
    run = registry.get_run(moved["run_id"])
    assert run["kind"] == "model_alias" and run["user"] == "bob" and run["ended_at"]
    assert run["params"] == {"model": "pot", "alias": "production", "from_version": 2,
                             "to_version": 3}
    with registry.session() as s:
        row = s.get(ModelAlias, (s.scalar(select(Model.id)), "production"))
        assert row.updated_by == "bob"
    assert registry.pull_model("pot@production").version == 3

    registry.retract_model("pot:4", "trained on retracted labels")
    assert registry.model_alias("pot", "latest") == 3  # latest skips retracted versions
    assert registry.show_model("pot:4")["aliases"] == []
    with pytest.warns(RetractedModelWarning, match="pot:4 is RETRACTED"):
        registry.pull_model("pot:4")
    with pytest.raises(Conflict, match="RETRACTED.*strict"):
        registry.pull_model("pot:4", strict=True)
    with pytest.raises(Conflict, match="already retracted"):
        registry.retract_model("pot:4", "again")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.pull_model("pot")  # not retracted: no warning
    for k in (1, 2, 3):
        registry.retract_model(f"pot:{k}", "bad")
    with pytest.raises(NotFound, match="no version that is not retracted"):
        registry.pull_model("pot")


def test_list_versions_paginates(registry):
    for k in range(7):
        registry.register_model("p", state(k, n=2), architecture="mlp",
                                metrics={"k": k})
    registry.register_model("q", state(0, n=2), architecture="mlp")
    registry.set_model_alias("p:5", "production")
    page = registry.list_model_versions("p", limit=3)
    assert [r["version"] for r in page] == [7, 6, 5]
    assert page[0]["aliases"] == ["latest"] and page[2]["aliases"] == ["production"]
    page2 = registry.list_model_versions("p", limit=3, before=5)
    assert [r["version"] for r in page2] == [4, 3, 2]
    models = {m["name"]: m for m in registry.list_models()}
    assert models["p"]["versions"] == 7 and models["p"]["aliases"] == {"production": 5}
    assert models["q"]["latest"] == 1


@pytest.mark.parametrize("weights, message", [
    (pickle.dumps({"w": [1.0, 2.0]}), "looks like a Python pickle"),
    (None, "zip archive"),  # filled in below: a torch.save-style zip
    (b"not a model at all", "not a safetensors file"),
    ({"w": [1, 2, 3]}, "not a numpy array"),
    ({}, "empty state dict"),
    ([], "empty list"),
    (12, "must be a dict of numpy arrays"),
])
def test_non_safetensors_weights_refused(registry, weights, message):
    if weights is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
        weights = buf.getvalue()
    before = row_counts(registry)
    with pytest.raises(BadInput, match=message):
        registry.register_model("m", weights, architecture="mlp")
    assert row_counts(registry) == before


def test_bad_input_writes_nothing(registry, tmp_path):
    registry.register_model("m", state(0), architecture="mlp")
    before = row_counts(registry)
    cases = [
        (dict(name="bad:name"), BadInput, "invalid model name"),
        (dict(architecture=""), BadInput, "architecture"),
        (dict(level="no-such-level"), NotFound, "unknown level of theory"),
        (dict(dataset_version="nods:1"), NotFound, "dataset"),
        (dict(parent="m:7"), NotFound, "has no version 7"),
        (dict(parent="zz"), NotFound, "unknown model 'zz'"),
        (dict(run=999999), NotFound, "no run with id 999999"),
        (dict(extras={"../x": b"1"}), BadInput, "invalid extra file name"),
        (dict(extras={"model.json": b"1"}), BadInput, "invalid extra file name"),
        (dict(elements=["Xx"]), BadInput, "Xx"),
        (dict(cutoff=-1), BadInput, "cutoff must be positive"),
        (dict(config={"x": float("nan")}), BadInput, "config is not JSON"),
        (dict(weights=str(tmp_path / "missing.safetensors")), BadInput, "no such file"),
    ]
    for kwargs, exc, msg in cases:
        args = {"name": "m", "weights": state(9), "architecture": "mlp", **kwargs}
        with pytest.raises(exc, match=msg):
            registry.register_model(args.pop("name"), args.pop("weights"), **args)
    assert row_counts(registry) == before  # no rows and no artifacts
    for ref, exc, msg in [("nope", NotFound, "unknown model 'nope'"),
                          ("m:3", NotFound, r"has no version 3 \(versions 1..1\)"),
                          ("m@staging", NotFound, "no alias 'staging'"),
                          ("m:0", BadInput, "positive integer"), ("", BadInput, "empty")]:
        with pytest.raises(exc, match=msg):
            registry.pull_model(ref)
    for args, exc, msg in [(("m:5", "production"), NotFound, "has no version 5"),
                           (("m:1", "latest"), BadInput, "automatic"),
                           (("m:1", "Prod!"), BadInput, "invalid alias")]:
        with pytest.raises(exc, match=msg):
            registry.set_model_alias(*args)
    with pytest.raises(BadInput, match="needs a reason"):
        registry.retract_model("m:1", " ")
    with pytest.raises(BadInput, match="explicit version"):
        registry.retract_model("m", "x")
    assert row_counts(registry) == before


def _register_many(url: str, artifacts: str, k: int, n: int, barrier) -> list[int]:
    os.environ["NNP_ARTIFACTS"] = artifacts
    from registry.core import Registry

    with Registry(url) as reg:
        barrier.wait(timeout=60)
        return [reg.register_model("race", {"w": np.full(4, 100.0 * k + i)},
                                   architecture="mlp")["version"] for i in range(n)]


def test_concurrent_registration_numbers_without_gaps(registry, db_url, tmp_path):
    procs, per = 8, 10
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(procs)
    with ctx.Pool(procs) as pool:
        results = pool.starmap(_register_many, [(db_url, str(registry.artifacts.root), k, per,
                                                 barrier) for k in range(procs)])
    got = sorted(v for r in results for v in r)
    assert got == list(range(1, procs * per + 1))
    with registry.session() as s:
        versions = s.scalars(select(ModelVersion.version).order_by(ModelVersion.version)).all()
    assert versions == list(range(1, procs * per + 1))
    assert all(r == sorted(r) for r in results)


def _other_backend_url(db_url: str, tmp_path):
    """A fresh database on the other backend (PostgreSQL for SQLite and vice versa)."""
    from conftest import _pg_available, new_pg_database

    from registry.store.engine import upgrade

    if db_url.startswith("sqlite"):
        if _pg_available():
            pytest.skip("PostgreSQL unavailable for the SQLite -> PostgreSQL round trip")
        url = new_pg_database()
    else:
        url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(url)
    return url


def test_bundle_roundtrip_across_backends(registry, db_url, tmp_path):
    from conftest import drop_pg_database

    from registry.core import Registry
    from registry.store.artifacts import ArtifactStore

    registry.ensure_level("wb97x/6-31g*", program="orca", program_version="5.0.4")
    registry.register_model("base", state(5), architecture="ani")
    src = registry.register_model("ani", [state(1), state(2)], architecture="ani",
                                  config={"a": 1}, level="wb97x/6-31g*", cutoff=4.6,
                                  parent="base:1", metrics={"mae": 0.02},
                                  extras={"model.pt": b"torchscript bytes"})
    out = registry.export_model("ani:1", tmp_path / "m.nnp.zip")
    assert out["content_hash"] == src["content_hash"]
    with zipfile.ZipFile(tmp_path / "m.nnp.zip") as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["provenance"]["training_run"]["code"]["version"]
    assert manifest["provenance"]["level"]["program"] == "orca"

    other_url = _other_backend_url(db_url, tmp_path)
    try:
        with Registry(other_url) as other:
            other.artifacts = ArtifactStore(str(tmp_path / "other-artifacts"))
            other.register_model("ani", state(9), architecture="ani")  # name already taken
            imp = other.import_model(tmp_path / "m.nnp.zip")
            assert imp["ref"] == "ani:2" and imp["content_hash"] == src["content_hash"]
            assert [f["sha256"] for f in imp["files"]] == [f["sha256"] for f in src["files"]]
            assert imp["level"] == "wb97x/6-31g*" and imp["config"] == {"a": 1}
            assert other.get_level("wb97x/6-31g*")["program"] == "orca"
            pulled = other.pull_model("ani:2")
            np.testing.assert_array_equal(pulled.members[1]["layer.weight"],
                                          state(2)["layer.weight"])
            run = other.get_run(imp["run_id"])
            assert run["kind"] == "model_import" and run["params"]["source"] == "ani:1"
            lin = other.lineage("ani:2")
            assert lin["imported_provenance"]["ref"] == "ani:1"
            assert "no dataset version recorded" in lin["missing"]
            # a tampered bundle is refused before anything is written
            tampered = tmp_path / "bad.nnp.zip"
            with zipfile.ZipFile(tmp_path / "m.nnp.zip") as zin, \
                    zipfile.ZipFile(tampered, "w") as zout:
                for item in zin.infolist():
                    data = zin.read(item)
                    if item.filename == "files/member_1.safetensors":
                        data = data[:-4] + b"\0\0\0\1"
                    zout.writestr(item, data)
            before = row_counts(other)
            with pytest.raises(BadInput, match="does not match its sha256"):
                other.import_model(tampered)
            (tmp_path / "junk.zip").write_bytes(b"junk")
            with pytest.raises(BadInput, match="not a zip"):
                other.import_model(tmp_path / "junk.zip")
            assert row_counts(other) == before
    finally:
        if other_url.startswith("postgresql"):
            drop_pg_database(other_url)


def test_models_using_dataset_versions_and_labels(registry):
    from helpers import labelled_molecules

    registry.ingest(labelled_molecules(), level="wb97x/6-31g*")
    dv = registry.create_dataset_version("mols", levels=["wb97x/6-31g*"])
    a = registry.register_model("a", state(0), architecture="mlp", dataset_version="mols:1")
    registry.register_model("b", state(1), architecture="mlp")
    c = registry.register_model("c", state(2), architecture="mlp", dataset_version=dv["id"])
    got = registry.models_using_dataset_versions([dv["id"]])
    assert [m["ref"] for m in got] == ["a:1", "c:1"]
    assert a["dataset_version"]["hash"] == dv["hash"] == c["dataset_version"]["hash"]
    with registry.session() as s:
        from registry.store.schema import DatasetMember

        label_id = s.scalar(select(DatasetMember.label_id).limit(1))
    assert [m["ref"] for m in registry.models_using_labels([label_id])] == ["a:1", "c:1"]
    assert registry.models_using_labels([]) == []
    assert registry.models_using_dataset_versions([10**9]) == []


def test_cli_models(registry, nnp, tmp_path, capsys):
    from safetensors.numpy import save_file

    save_file(state(0), tmp_path / "w0.safetensors")
    save_file(state(1), tmp_path / "w1.safetensors")
    (tmp_path / "bad.pt").write_bytes(pickle.dumps({"w": 1}))
    assert nnp("models", "register", "cli", tmp_path / "w0.safetensors",
               tmp_path / "w1.safetensors", "--architecture", "ani", "--config", '{"n": 2}',
               "--elements", "H,O", "--json") == 0
    assert json.loads(capsys.readouterr().out)["n_members"] == 2
    before = row_counts(registry)
    assert nnp("models", "register", "cli", tmp_path / "bad.pt", "--architecture", "x") == 2
    assert "pickle" in capsys.readouterr().err
    assert row_counts(registry) == before
    assert nnp("models", "register", "cli", tmp_path / "w1.safetensors",
               "--architecture", "ani") == 0
    assert nnp("models", "alias", "cli:1", "production") == 0
    assert "cli@production → 1" in capsys.readouterr().out
    assert nnp("models", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["aliases"] == {"production": 1}
    assert nnp("models", "list", "cli", "--limit", "1", "--json") == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == [2]
    assert nnp("models", "show", "cli@production", "--json") == 0
    assert json.loads(capsys.readouterr().out)["config"] == {"n": 2}
    assert nnp("models", "show", "cli:1") == 0
    assert "member_1.safetensors" in capsys.readouterr().out
    assert nnp("models", "retract", "cli:1", "--reason", "wrong units") == 0
    capsys.readouterr()
    assert nnp("models", "pull", "cli@production", "-o", tmp_path / "out") == 0
    assert "RETRACTED" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "out")) == ["member_0.safetensors",
                                                   "member_1.safetensors", "model.json"]
    assert nnp("models", "pull", "cli:1", "--strict", "-o", tmp_path / "strict") == 2
    assert "refused" in capsys.readouterr().err and not (tmp_path / "strict").exists()
    assert nnp("models", "export", "cli:2", "-o", tmp_path / "b.nnp.zip") == 0
    capsys.readouterr()
    assert nnp("models", "import", tmp_path / "b.nnp.zip", "--name", "copy", "--json") == 0
    assert json.loads(capsys.readouterr().out)["ref"] == "copy:1"
    assert nnp("models", "show", "cli:9") == 2
    assert "has no version 9" in capsys.readouterr().err


def test_torch_state_dicts_roundtrip(registry):
    torch = pytest.importorskip("torch")
    from pipelines.training.torch_io import load_state_dicts, register_torch_model

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
            for _ in range(2)]
    info = register_torch_model(registry, "torchnet", nets, architecture="mlp")
    sds = load_state_dicts(registry.pull_model(info["ref"]))
    for net, sd in zip(nets, sds, strict=True):
        for k, v in net.state_dict().items():
            assert torch.equal(sd[k], v)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
    fresh.load_state_dict(sds[1])
    x = torch.randn(3, 4)
    assert torch.equal(fresh(x), nets[1](x))
