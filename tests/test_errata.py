"""Errata: retraction keeps rows and old versions, new versions exclude; impact (both backends)."""

from __future__ import annotations

import pytest
from helpers import labelled_molecules
from sqlalchemy import func, select

from registry.errors import BadInput, NotFound
from registry.store.schema import Label, Model, ModelVersion

LEVEL = "pbe/def2-svp"


def _setup(registry):
    mols = labelled_molecules(seed=0) + labelled_molecules(seed=1)
    registry.ingest(mols, LEVEL)
    return registry.create_dataset_version("e", levels=[LEVEL])


def test_retract_and_impact(registry):
    v1 = _setup(registry)
    with registry.session() as s:
        n_labels = s.scalar(select(func.count()).select_from(Label))
    out = registry.retract_labels(filter='elements HAS "N"', level=LEVEL, reason="bad basis")
    assert out["retracted"] == 2
    with registry.session() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == n_labels  # never deleted
        rows = s.execute(select(Label.status, Label.status_reason)
                         .where(Label.id.in_(out["label_ids"]))).all()
    assert set(rows) == {("retracted", "bad basis")}
    assert [d["ref"] for d in out["impact"]["dataset_versions"]] == ["e:1"]
    assert out["impact"]["dataset_versions"][0]["labels_given"] == 2
    v2 = registry.create_dataset_version("e", levels=[LEVEL])
    assert v2["n_structures"] == v1["n_structures"] - 2
    imp = registry.impact(label_ids=out["label_ids"][:1])
    assert [d["ref"] for d in imp["dataset_versions"]] == ["e:1"]
    assert registry.impact("e:2")["dataset_versions"][0]["retracted"] == 0
    assert registry.impact("e:1")["dataset_versions"][0]["retracted"] == 2
    assert registry.show_dataset("e:1")["per_level"][LEVEL]["retracted_since"] == 2
    again = registry.retract_labels(filter='elements HAS "N"', level=LEVEL, reason="x")
    assert again["retracted"] == 0  # already retracted


def test_impact_lists_model_versions(registry):
    v1 = _setup(registry)
    with registry.session() as s:
        m = Model(name="pot")
        s.add(m)
        s.flush()
        s.add(ModelVersion(model_id=m.id, version=1, architecture="ani",
                           dataset_version_id=v1["id"]))
    label_id = registry.retract_labels(filter="nsites=3", level=LEVEL,
                                       reason="x")["label_ids"][0]
    imp = registry.impact(label_ids=[label_id])
    assert [(d["version"], d["dataset_version_id"]) for d in imp["model_versions"]] == \
        [(1, v1["id"])]
    assert len(registry.impact("e:1")["model_versions"]) == 1


def test_bad_input_writes_nothing(registry):
    _setup(registry)

    def state():
        with registry.session() as s:
            return s.execute(select(Label.id, Label.status).order_by(Label.id)).all()

    before = state()
    with pytest.raises(BadInput, match="needs a --reason"):
        registry.retract_labels(filter="nsites=3", level=LEVEL, reason=" ")
    with pytest.raises(NotFound, match="unknown level of theory 'mp2/x'"):
        registry.retract_labels(filter="nsites=3", level="mp2/x", reason="r")
    with pytest.raises(BadInput, match="unknown field 'sites'"):
        registry.retract_labels(filter="sites=3", level=LEVEL, reason="r")
    with pytest.raises(NotFound, match="no label with id 999999"):
        registry.impact(label_ids=[999999])
    with pytest.raises(NotFound, match="no version 5"):
        registry.impact("e:5")
    assert state() == before


def test_cli(registry, nnp, capsys):
    _setup(registry)
    assert nnp("label", "retract", "--filter", 'elements HAS "O"', "--level", LEVEL,
               "--reason", "wrong spin") == 0
    out = capsys.readouterr().out
    assert "retracted 4 labels" in out and "dataset e:1" in out
    assert nnp("impact", "e:1", "--json") == 0
    assert '"retracted": 4' in capsys.readouterr().out
    assert nnp("impact") == 2
    assert "give a dataset REF or --label ID" in capsys.readouterr().err
