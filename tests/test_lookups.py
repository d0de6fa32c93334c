"""Shared lookups and the one run path, on both backends: every caller resolves references
the same way and records failures the same way."""

import numpy as np
import pytest
from helpers import counts, labelled_molecules
from sqlalchemy import delete, func, select

from registry.errors import NotFound
from registry.query import structure_filter
from registry.store.schema import DatasetAlias, ModelAlias, Run, Structure

LEVEL = "pbe/sz"


@pytest.fixture
def two_versions(registry):
    registry.ingest(labelled_molecules(), LEVEL)
    v1 = registry.create_dataset_version("water", levels=LEVEL, filter="nsites <= 5")
    v2 = registry.create_dataset_version("water", levels=LEVEL)
    return registry, v1, v2


def test_dataset_version_by_id_ref_and_alias(two_versions):
    reg, v1, v2 = two_versions
    assert reg.resolve_dataset(v1["id"])["ref"] == "water:1"
    assert reg.resolve_dataset("water")["ref"] == "water:2"
    assert reg.resolve_dataset("water@latest")["ref"] == "water:2"
    assert reg.materialize(v1["id"], cache=False).summary()["n_structures"] == \
        v1["n_structures"]
    with pytest.raises(NotFound, match="no dataset version with id 999999"):
        reg.resolve_dataset(999999)


def test_latest_falls_back_to_the_newest_version_everywhere(two_versions):
    """Without the ``latest`` alias row, every reader still means the newest version."""
    reg, v1, v2 = two_versions
    with reg.session() as s:
        s.execute(delete(DatasetAlias).where(DatasetAlias.alias == "latest"))
    assert reg.resolve_dataset("water")["ref"] == "water:2"
    assert reg.count('_nnp_dataset = "water"') == v2["n_structures"]
    with reg.session() as s:  # compiled without a session: a sub-query, same answer
        clause = structure_filter('_nnp_dataset = "water@latest"')
        n = s.scalar(select(func.count()).select_from(Structure).where(clause))
    assert n == v2["n_structures"]
    assert reg.show_dataset("water")["ref"] == "water:2"
    with pytest.raises(NotFound, match="has no alias 'prod'"):
        reg.resolve_dataset("water@prod")


def test_unknown_level_reads_the_same_from_every_stage(registry):
    registry.ingest(labelled_molecules(), LEVEL)
    expected = "unknown level of theory 'ccsd(t)/nope'; known levels: pbe/sz"
    calls = [
        lambda: registry.get_level("CCSD(T)/nope"),
        lambda: registry.create_dataset_version("d", levels="ccsd(t)/nope"),
        lambda: registry.register_model("m", {"w": np.zeros(2)}, architecture="x",
                                        level="ccsd(t)/nope"),
        lambda: registry.count("_nnp_energy < 0", level="ccsd(t)/nope"),
        lambda: registry.count('_nnp_levels HAS "ccsd(t)/nope"'),
        lambda: registry.retract_labels(level="ccsd(t)/nope", reason="r", filter="nsites>0"),
        lambda: list(registry.iter_frames(["ccsd(t)/nope"])),
    ]
    for call in calls:
        with pytest.raises(NotFound) as err:
            call()
        assert str(err.value) == expected
    assert counts(registry) == (5, 5)


def test_model_version_by_id_ref_and_alias(registry):
    a = registry.register_model("m", {"w": np.zeros(3)}, architecture="x")
    b = registry.register_model("m", {"w": np.ones(3)}, architecture="x", parent=a["id"])
    registry.set_model_alias("m:1", "production")
    assert registry.show_model(a["id"])["ref"] == "m:1"
    assert registry.show_model("m@production")["ref"] == "m:1"
    assert registry.show_model("m")["ref"] == "m:2" and b["parent"] == "m:1"
    assert registry.lineage("m:2")["parent"]["ref"] == "m:1"
    with pytest.raises(NotFound, match="no model version with id 999999"):
        registry.show_model(999999)


def test_run_path_records_ok_failed_and_interrupted(registry):
    with pytest.raises(KeyboardInterrupt), registry.run("ingest", {"n": 1}) as run:
        raise KeyboardInterrupt
    assert registry.get_run(run.id)["status"] == "interrupted"
    assert [r["id"] for r in registry.list_runs(status="interrupted")] == [run.id]
    with pytest.raises(ValueError), registry.run("ingest") as run2:
        raise ValueError("bad frame 3")
    got = registry.get_run(run2.id)
    assert got["status"] == "failed" and got["error"] == "ValueError: bad frame 3"


def test_in_transaction_run_vanishes_with_a_refused_change(registry):
    registry.register_model("m", {"w": np.zeros(3)}, architecture="x")
    registry.retract_model("m:1", "bad data")
    with registry.session() as s:
        before = s.scalar(select(func.count()).select_from(Run))
    with pytest.raises(Exception, match="retracted"):
        registry.set_model_alias("m:1", "production")
    with registry.session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == before
        assert s.scalar(select(func.count()).select_from(ModelAlias)) == 0
    kinds = [r["kind"] for r in registry.list_runs()]
    assert kinds[:2] == ["model_retract", "register_model"]
