"""Dataset versions: numbering, aliases, splits, content hash, multi-fidelity, reference
energies, bad input (both backends)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from ase.build import molecule
from helpers import labelled_molecules
from sqlalchemy import func, select

from registry.curation.splits import assign_splits, parse_fractions
from registry.errors import BadInput, NotFound
from registry.store.schema import (
    Dataset,
    DatasetAlias,
    DatasetMember,
    DatasetVersion,
    ReferenceEnergy,
    Run,
)

LOW, HIGH = "pbe/def2-svp", "ccsd(t)/cc-pvdz"


def conformers(names=("H2O", "CH4", "NH3", "C2H6", "CH3OH"), n=4, seed=0):
    """``n`` perturbed copies of each molecule, energies/forces in info/arrays."""
    out = []
    for k in range(n):
        out += labelled_molecules(names, seed=seed + k)
    return out


def table_counts(reg) -> dict:
    with reg.session() as s:
        return {t.__name__: s.scalar(select(func.count()).select_from(t))
                for t in (Dataset, DatasetVersion, DatasetMember, DatasetAlias, Run,
                          ReferenceEnergy)}


def test_versions_aliases_show(registry):
    registry.ingest(conformers(), LOW)
    v1 = registry.create_dataset_version("mols", levels=[LOW], filter='elements HAS "C"',
                                         note="first")
    assert (v1["version"], v1["n_structures"], v1["aliases"]) == (1, 12, ["latest"])
    v2 = registry.create_dataset_version("mols", levels=[LOW], filter="nsites<=4")
    assert v2["version"] == 2 and v2["n_structures"] == 8  # H2O and NH3 conformers
    assert registry.resolve_dataset("mols")["version"] == 2
    assert registry.resolve_dataset("mols@latest")["id"] == v2["id"]
    assert registry.resolve_dataset("mols:1")["hash"] == v1["hash"]
    registry.alias_dataset("mols:1", "production")
    assert registry.resolve_dataset("mols@production")["version"] == 1
    show = registry.show_dataset("mols:1")
    assert sum(show["split_counts"].values()) == 12
    assert set(show["elements"]) == {"C", "H", "O"}
    assert show["elements"]["C"]["structures"] == 12
    assert show["per_level"][LOW]["labels"] == 12
    assert show["note"] == "first" and show["filter"] == 'elements HAS "C"'
    listed = registry.list_datasets()
    assert [v["ref"] for v in listed[0]["versions"]] == ["mols:1", "mols:2"]
    d = registry.diff_datasets("mols:1", "mols:2")
    assert (d["removed"], d["added"], d["unchanged"]) == (12, 8, 0)
    run = registry.get_run(v1["run_id"])
    assert run["outputs"][0]["entity_type"] == "dataset_version"


def test_group_aware_deterministic_splits(registry):
    registry.ingest(conformers(n=6), LOW)
    kw = dict(levels=[LOW], split="0.6,0.2,0.2", group_by="formula")
    a = registry.create_dataset_version("g", seed=3, **kw)
    b = registry.create_dataset_version("g", seed=3, **kw)
    assert a["hash"] == b["hash"]  # same content, same split -> same hash
    with registry.session() as s:
        rows = s.execute(select(DatasetMember.split, DatasetMember.structure_id)
                         .where(DatasetMember.version_id == a["id"])).all()
    from registry.store.schema import Composition, Structure

    with registry.session() as s:
        formula = dict(s.execute(select(Structure.id, Composition.formula_reduced).join(
            Composition, Composition.id == Structure.composition_id)).all())
    per_group: dict[str, set] = {}
    for sp, sid in rows:
        per_group.setdefault(formula[sid], set()).add(sp)
    assert all(len(v) == 1 for v in per_group.values())  # no leakage between splits
    none = registry.create_dataset_version("g", levels=[LOW], group_by="none", seed=1,
                                           split="0.5,0.25,0.25")
    assert none["split_counts"] == {"train": 15, "valid": 8, "test": 7}


def test_split_function():
    keys = [f"{i:04d}" for i in range(100)]
    groups = [k[:3] for k in keys]  # 10 groups of 10
    s1 = assign_splits(keys, groups, (0.8, 0.1, 0.1), seed=0)
    assert np.array_equal(s1, assign_splits(keys, groups, (0.8, 0.1, 0.1), seed=0))
    assert np.bincount(s1, minlength=3).tolist() == [80, 10, 10]
    for g in set(groups):
        assert len({int(s1[i]) for i in range(100) if groups[i] == g}) == 1
    assert not np.array_equal(s1, assign_splits(keys, groups, (0.8, 0.1, 0.1), seed=1))
    assert parse_fractions("0.9,0.1") == (0.9, 0.1, 0.0)
    with pytest.raises(BadInput, match="sum to 1.1"):
        parse_fractions("0.8,0.2,0.1")


def test_split_function_strata():
    """Each stratum is split on its own; a group spanning strata goes with its majority."""
    keys = [f"{i:04d}" for i in range(120)]
    strata = ["A" if i < 80 else "B" for i in range(120)]
    groups = [f"g{i // 10}" for i in range(120)]  # 8 groups of A, 4 of B
    s = assign_splits(keys, groups, (0.5, 0.25, 0.25), seed=2, strata=strata)
    assert np.array_equal(s, assign_splits(keys, groups, (0.5, 0.25, 0.25), seed=2,
                                           strata=strata))
    a, b = s[:80], s[80:]
    assert np.bincount(a, minlength=3).tolist() == [40, 20, 20]
    assert np.bincount(b, minlength=3).tolist() == [20, 10, 10]
    mixed = ["A"] * 6 + ["B"] * 4 + strata[10:]  # group g0 is mostly A
    m = assign_splits(keys, groups, (0.5, 0.25, 0.25), seed=2, strata=mixed)
    assert len(set(m[:10].tolist())) == 1
    assert np.bincount(m[:80], minlength=3).tolist() == [40, 20, 20]
    with pytest.raises(ValueError, match="differ in length"):
        assign_splits(keys, groups, (1, 0, 0), seed=0, strata=strata[:5])


def test_stratified_grouped_split_trains_every_formula(registry):
    """Grouped by trajectory (source), a plain split leaves a molecule out of training for
    some seeds; stratified by formula, every molecule is trained for every seed, and an
    extension splits its new trajectories the same way."""
    names = ("H2O", "CH4", "NH3")
    for traj in range(4):
        for name in names:
            frames = []
            for k in range(3):
                frames += labelled_molecules([name], seed=100 * traj + 10 * k + len(name))
            registry.ingest(frames, LOW, source=f"{name}-{traj}")

    def trained_and_groups(v):
        from registry.store.schema import Composition, Structure

        with registry.session() as s:
            rows = s.execute(select(DatasetMember.split, Composition.formula_reduced,
                                    Structure.source)
                             .join(Structure, Structure.id == DatasetMember.structure_id)
                             .join(Composition, Composition.id == Structure.composition_id)
                             .where(DatasetMember.version_id == v["id"])).all()
        per_source: dict[str, set] = {}
        for sp, _, src in rows:
            per_source.setdefault(src, set()).add(sp)
        assert all(len(v) == 1 for v in per_source.values())  # a trajectory is never cut
        return {f for sp, f, _ in rows if sp == 0}

    kw = dict(levels=[LOW], split="0.5,0.1,0.4", group_by="source")
    plain = [trained_and_groups(registry.create_dataset_version("p", seed=k, **kw))
             for k in range(12)]
    assert any(len(t) < 3 for t in plain)  # the failure stratifying prevents
    for k in range(12):
        v = registry.create_dataset_version("st", seed=k, stratify_by="formula", **kw)
        assert trained_and_groups(v) == {"H2O", "CH4", "H3N"}
        assert v["params"]["stratify_by"] == "formula"
        assert v["split_counts"] == {"train": 18, "valid": 9, "test": 9}
    again = registry.create_dataset_version("st", seed=11, stratify_by="formula", **kw)
    assert again["hash"] == v["hash"]

    from registry.curation.extend import extend_dataset_version
    from registry.store.schema import Label

    with registry.session() as s:
        old = set(s.scalars(select(Label.id)))
    for traj in range(4):
        for name in ("C2H6", "C2H2"):
            registry.ingest(labelled_molecules([name] * 3, seed=900 + traj), LOW,
                            source=f"{name}-{traj}")
    with registry.session() as s:
        new = sorted(set(s.scalars(select(Label.id))) - old)
    ext = extend_dataset_version(registry, v["ref"], "st-al", new)
    assert ext["params"]["stratify_by"] == "formula" and ext["added"] == 24
    assert trained_and_groups(ext) == {"H2O", "CH4", "H3N", "CH3", "CH"}
    with registry.session() as s:
        from registry.store.schema import Composition, Structure

        per = s.execute(select(Composition.formula_reduced, DatasetMember.split, func.count())
                        .join(Structure, Structure.id == DatasetMember.structure_id)
                        .join(Composition, Composition.id == Structure.composition_id)
                        .where(DatasetMember.version_id == ext["id"],
                               Composition.formula_reduced.in_(["CH3", "CH"]))
                        .group_by(Composition.formula_reduced, DatasetMember.split)).all()
    # each new formula split on its own: 2 trajectories train, 1 valid, 1 test
    assert sorted(per) == [("CH", 0, 6), ("CH", 1, 3), ("CH", 2, 3),
                           ("CH3", 0, 6), ("CH3", 1, 3), ("CH3", 2, 3)]


def test_concurrent_creates_number_versions(registry):
    registry.ingest(conformers(n=1), LOW)
    errors, made = [], []

    def work():
        from registry.core import Registry

        try:
            with Registry(registry.url) as reg:
                made.append(reg.create_dataset_version("race", levels=[LOW])["version"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(made) == [1, 2, 3, 4]
    assert registry.resolve_dataset("race")["version"] == 4


def _two_levels(registry):
    mols = conformers(n=2)
    registry.ingest(mols, LOW)
    rng = np.random.default_rng(9)
    high = []
    for a in mols[:6]:  # only some structures get the high level
        b = a.copy()
        b.info = {"energy": a.info["energy"] + float(rng.normal(-1, 0.1))}
        b.arrays["forces"] = a.arrays["forces"] + 0.5
        high.append(b)
    registry.ingest(high, HIGH)
    return mols, high


def test_multi_fidelity_and_delta(registry, tmp_path):
    _, high = _two_levels(registry)
    both = registry.create_dataset_version("mf", levels=[LOW, HIGH])
    assert both["n_structures"] == 6 and both["levels"] == [HIGH, LOW]
    with registry.session() as s:
        assert s.scalar(select(func.count()).select_from(DatasetMember)
                        .where(DatasetMember.version_id == both["id"])) == 12
    d = registry.create_dataset_version("delta", levels=[LOW, HIGH], delta=f"{HIGH}-{LOW}")
    assert d["params"]["delta"] == {"high": HIGH, "low": LOW}
    assert d["hash"] != both["hash"]
    m = registry.materialize("delta", cache_dir=tmp_path)
    energy = np.concatenate([b["energy"] for b in m.buckets])
    levels = np.concatenate([b["level_energy"] for b in m.buckets])
    assert np.allclose(energy, levels[:, 0] - levels[:, 1])
    assert np.allclose(energy, -1, atol=0.5)
    forces = np.concatenate([b["forces"][b["numbers"] > 0] for b in m.buckets])
    assert np.allclose(forces, 0.5)
    with pytest.raises(BadInput, match="does not name two"):
        registry.create_dataset_version("delta", levels=[LOW, HIGH], delta="pbe-ccsd")


def test_two_level_version_read_in_ranges(registry, monkeypatch):
    """A version with two member rows per structure reads the same in many small ranges on
    parallel readers as in one range (the cuts count each structure once)."""
    import registry.training_data.reads as mat

    _two_levels(registry)
    registry.create_dataset_version("delta", levels=[LOW, HIGH], delta=f"{HIGH}-{LOW}")
    whole = registry.materialize("delta", cache=False)
    monkeypatch.setattr(mat, "_CHUNK_ROWS", {"sqlite": 2, "postgresql": 2})
    monkeypatch.setattr(mat, "_READERS", {"sqlite": 2, "postgresql": 2})
    monkeypatch.setattr(mat, "_PARALLEL_MIN", 1)
    assert len(mat._ranges(registry.engine.connect, registry.dialect,
                           registry.resolve_dataset("delta")["id"], 6)) == 3
    ranged = registry.materialize("delta", cache=False)
    assert len(ranged) == len(whole) == 6
    for a, b in zip(whole.buckets, ranged.buckets, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_reference_energies_fit_and_set(registry, tmp_path):
    refs = {1: -13.6, 6: -1029.0, 7: -1485.0, 8: -2042.0}
    mols = []
    for k in range(3):
        for a in labelled_molecules(seed=k):
            a.info["energy"] = sum(refs[z] for z in a.numbers) + 0.01 * k
            mols.append(a)
    registry.ingest(mols, LOW)
    registry.create_dataset_version("re", levels=[LOW])
    fit = registry.fit_reference_energies(LOW, "re")
    assert fit["energies"]["C"] == pytest.approx(-1029.0, abs=0.05)
    assert fit["method"]["H"] == "fit" and fit["rmse_eV"] < 0.05
    m = registry.materialize("re", cache_dir=tmp_path)
    e = np.concatenate([b["energy"] - b["energy_ref"] for b in m.buckets])
    assert np.abs(e).max() < 0.1
    out = registry.set_reference_energies(LOW, {"H": -13.0})
    assert out["energies"]["H"] == -13.0 and out["method"]["H"] == "set"
    assert registry.get_level(LOW)["reference_energies"][1] == -13.0
    with pytest.raises(BadInput, match="no labels at"):
        registry.fit_reference_energies(HIGH if registry.ensure_level(HIGH) else LOW, "re")


BAD = [
    (dict(levels=[LOW], filter="elements HAS"), BadInput, "syntax error at line 1, column 13"),
    (dict(levels=[LOW], filter="colour = 3"), BadInput, "unknown field 'colour'"),
    (dict(levels=["nope/none"]), NotFound, "unknown level of theory 'nope/none'"),
    (dict(levels=[LOW], split="0.8,0.1"), BadInput, "sum to 0.9, not 1"),
    (dict(levels=[LOW], filter='elements HAS "U"'), BadInput, "no structure matches"),
    (dict(levels=[LOW], group_by="colour"), BadInput, "--group-by"),
    (dict(levels=[LOW], group_by="source", stratify_by="colour"), BadInput, "--stratify-by"),
    (dict(levels=[LOW], stratify_by="formula"), BadInput,
     "--stratify-by formula with --group-by formula"),
]


@pytest.mark.parametrize("kwargs,exc,msg", BAD)
def test_bad_create_writes_nothing(registry, kwargs, exc, msg):
    registry.ingest(conformers(n=1), LOW)
    registry.create_dataset_version("ok", levels=[LOW])
    before = table_counts(registry)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        registry.create_dataset_version("ok", **kwargs)
    assert table_counts(registry) == before


def test_bad_refs_write_nothing(registry):
    registry.ingest(conformers(n=1), LOW)
    registry.create_dataset_version("ok", levels=[LOW])
    before = table_counts(registry)
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        registry.resolve_dataset("nope:1")
    with pytest.raises(NotFound, match="has no version 7; versions: 1"):
        registry.show_dataset("ok:7")
    with pytest.raises(NotFound, match="has no version 3"):
        registry.alias_dataset("ok:3", "production")
    with pytest.raises(NotFound, match="has no alias 'prod'"):
        registry.materialize("ok@prod")
    with pytest.raises(BadInput, match="invalid alias"):
        registry.alias_dataset("ok:1", "Bad Alias")
    assert table_counts(registry) == before


def test_cli(registry, nnp, capsys):
    registry.ingest(conformers(n=2), LOW)
    assert nnp("dataset", "create", "cli", "--filter", 'elements HAS "O"', "--level", LOW,
               "--split", "0.5,0.5", "--seed", "2") == 0
    assert "created cli:1" in capsys.readouterr().out
    assert nnp("dataset", "alias", "cli:1", "best") == 0
    assert nnp("dataset", "show", "cli@best", "--json") == 0
    assert '"n_structures": 4' in capsys.readouterr().out
    assert nnp("dataset", "create", "cli", "--level", LOW, "--split", "0.5,0.6") == 2
    assert "sum to 1.1" in capsys.readouterr().err
    assert nnp("dataset", "diff", "cli:1", "cli@latest") == 0
    capsys.readouterr()
    assert nnp("dataset", "create", "cli", "--level", LOW, "--group-by", "none",
               "--stratify-by", "formula", "--split", "0.5,0.5", "--json") == 0
    made = json.loads(capsys.readouterr().out)
    assert made["params"]["stratify_by"] == "formula"
    assert made["split_counts"] == {"train": 5, "valid": 5, "test": 0}  # 2 of each formula
    assert nnp("dataset", "create", "cli", "--level", LOW, "--stratify-by", "formula") == 2
    assert "--stratify-by formula with --group-by formula" in capsys.readouterr().err
    assert nnp("levels", "reference-energies", LOW, "--set", "H=-13.6,O=-2040") == 0
    assert "-13.6" in capsys.readouterr().out
    assert nnp("levels", "reference-energies", LOW, "--set", "Xx=1") == 2
    assert "unknown element" in capsys.readouterr().err


def test_same_hash_on_sqlite_and_postgresql(tmp_path):
    """Equal content built in both backends (ingested in different orders) -> equal hash."""
    from conftest import _pg_available, drop_pg_database, new_pg_database

    from registry.core import Registry
    from registry.store.engine import upgrade

    if _pg_available():
        pytest.skip("PostgreSQL unavailable")
    benzene = molecule("C6H6")
    benzene.info["energy"] = -1000.0
    benzene.arrays["forces"] = np.ones((12, 3))
    mols = conformers(n=3) + [benzene]
    urls = [f"sqlite:///{tmp_path / 'a.db'}", new_pg_database()]
    hashes = []
    try:
        for url, order in zip(urls, (mols, mols[::-1]), strict=True):
            upgrade(url)
            with Registry(url) as reg:
                reg.ingest(order[: len(order) // 2], LOW)
                reg.ingest(order[len(order) // 2:], LOW)
                v = reg.create_dataset_version("x", levels=[LOW], split="0.7,0.2,0.1", seed=5,
                                               filter="nsites>=3")
                m = reg.materialize("x", cache=False)
                hashes.append((v["hash"], [b["energy"].tolist() for b in m.buckets]))
    finally:
        drop_pg_database(urls[1])
    assert hashes[0] == hashes[1]
