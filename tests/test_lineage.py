"""Lineage: model version -> training run -> dataset version -> label runs -> ingest runs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from helpers import labelled_molecules

from registry.io.atoms import atoms_to_batch

LEVEL = "wb97x/6-31g*"


def _chain(registry, tmp_path):
    """Ingest a recorded file, make a dataset version, train (a run) and register."""
    from ase.io import write

    registry.add_level(LEVEL, program="orca", program_version="5.0.4",
                       keywords={"grid": "defgrid3"})
    mols = labelled_molecules()
    path = tmp_path / "mols.extxyz"
    write(path, mols, format="extxyz")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    batch, _ = atoms_to_batch(mols, LEVEL)
    ingest = registry.ingest_batch(batch, inputs=[{"entity_type": "file", "ref": path.name,
                                                   "sha256": sha, "size": path.stat().st_size}])
    dv = registry.create_dataset_version("mols", levels=[LEVEL], filter="nelements>=2")
    with registry.run("train", {"epochs": 3, "lr": 1e-3}) as run:
        run.consumed("dataset_version", dv["id"], ref=dv["ref"], sha256=dv["hash"])
        info = registry.register_model("ani", {"w": np.ones((2, 2))}, architecture="ani",
                                       level=LEVEL, dataset_version=dv["id"], run=run)
    return info, dv, ingest, sha


def test_lineage_walks_the_whole_chain(registry, tmp_path):
    info, dv, ingest, sha = _chain(registry, tmp_path)
    lin = registry.lineage("ani")
    assert lin["ref"] == "ani:1" and lin["missing"] == []
    run = lin["training_run"]
    assert run["kind"] == "train" and run["params"] == {"epochs": 3, "lr": 1e-3}
    assert run["code"]["version"] and "python" in run["environment"]
    assert any(e["entity_type"] == "model_version" and e["entity_id"] == info["id"]
               for e in run["outputs"])
    d = lin["dataset_version"]
    assert d["hash"] == dv["hash"] and d["filter"] == "nelements>=2"
    assert d["labels"]["total"] == dv["n_structures"] > 0
    assert d["labels"]["by_level"] == {LEVEL: {"ok": dv["n_structures"]}}
    assert sum(d["splits"].values()) == dv["n_structures"]
    assert d["creation_run"]["kind"]
    (label_run,) = d["label_runs"]
    assert label_run["id"] == ingest.run_id
    (lv,) = label_run["levels"]
    assert (lv["name"], lv["program"], lv["program_version"], lv["keywords"]) == (
        LEVEL, "orca", "5.0.4", {"grid": "defgrid3"})
    (ing,) = d["ingest_runs"]
    assert ing["files"][0]["name"] == "mols.extxyz" and ing["files"][0]["sha256"] == sha
    assert ing["n_structures"] >= dv["n_structures"]


def test_lineage_without_dataset_or_run_is_graceful(registry):
    registry.register_model("bare", {"w": np.zeros(3)}, architecture="mlp")
    lin = registry.lineage("bare:1")
    assert lin["dataset_version"] is None and lin["level"] is None
    assert "no dataset version recorded" in lin["missing"]
    assert lin["training_run"]["kind"] == "register_model"  # the registration itself
    from registry.models.lineage import lineage_tree

    labels = json.dumps(lineage_tree(lin))
    assert "missing: no dataset version recorded" in labels


def test_lineage_flags_retracted_labels_and_parent(registry, tmp_path):
    info, dv, _, _ = _chain(registry, tmp_path)
    registry.register_model("ft", {"w": np.ones(2)}, architecture="ani", parent="ani:1",
                            dataset_version="mols:1")
    from sqlalchemy import select

    from registry.store.schema import DatasetMember, Label

    with registry.session() as s:  # retract one pinned label in place (as an erratum does)
        lid = s.scalar(select(DatasetMember.label_id).limit(1))
        s.get(Label, lid).status = "retracted"
    lin = registry.lineage("ft:1")
    assert lin["parent"]["ref"] == "ani:1"
    assert lin["dataset_version"]["retracted_labels"] == 1
    assert [m["ref"] for m in registry.models_using_labels([lid])] == ["ani:1", "ft:1"]


def test_cli_lineage_tree_json_png(registry, nnp, tmp_path, capsys):
    _chain(registry, tmp_path)
    assert nnp("lineage", "ani@latest") == 0
    out = capsys.readouterr().out
    assert "dataset version mols:1" in out and "mols.extxyz" in out and "orca" in out
    assert nnp("lineage", "ani:1", "--json", "--png", tmp_path / "l.png") == 0
    assert json.loads(capsys.readouterr().out)["ref"] == "ani:1"
    assert (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert nnp("lineage", "nope") == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_imported_bundle_keeps_dataset_and_parent_refs(registry, nnp, tmp_path, capsys,
                                                       monkeypatch):
    """A bundle imported into a registry without its dataset version or parent keeps both
    references (ref and hash), marked not present, and `models show` prints the same hashes
    on both sides."""
    from registry.core import Registry
    from registry.store.engine import upgrade

    info, dv, _, _ = _chain(registry, tmp_path)
    registry.register_model("child", {"w": np.zeros((2, 2))}, architecture="ani",
                            parent="ani:1", dataset_version=dv["id"])
    capsys.readouterr()
    assert nnp("models", "export", "child:1", "-o", tmp_path / "c.nnp.zip") == 0
    capsys.readouterr()
    assert nnp("models", "show", "child:1", "--json") == 0
    src = json.loads(capsys.readouterr().out)

    other = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other)
    monkeypatch.setenv("NNP_DATABASE_URL", other)
    monkeypatch.setenv("NNP_ARTIFACTS", str(tmp_path / "other-artifacts"))
    assert nnp("models", "import", tmp_path / "c.nnp.zip") == 0
    capsys.readouterr()
    assert nnp("models", "show", "child:1", "--json") == 0
    imp = json.loads(capsys.readouterr().out)
    assert imp["content_hash"] == src["content_hash"]
    assert [f["sha256"] for f in imp["files"]] == [f["sha256"] for f in src["files"]]
    assert imp["dataset_version"] == {"id": None, "ref": dv["ref"], "hash": dv["hash"],
                                      "in_registry": False}
    assert src["dataset_version"]["hash"] == dv["hash"]
    assert imp["parent"] == src["parent"] == "ani:1"
    with Registry(other) as reg:
        lin = reg.lineage("child:1")
    assert lin["dataset_version"]["hash"] == dv["hash"]
    assert lin["dataset_version"]["in_registry"] is False
    assert "dataset version is not in this registry (hash recorded)" in lin["missing"]
