"""OPTIMADE filters, the Q builder, Registry.query/count and `nnp query` on both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import counts, crystal, labelled_molecules
from sqlalchemy import func, select, text

from registry.errors import BadInput, NotFound
from registry.query import FIELDS, Q, parse, structure_filter
from registry.store.schema import Structure

LOW, HIGH = "pbe/def2-svp", "ccsd(t)/cc-pvdz"
ALL = {"H2O", "CH4", "H3N", "C2H6", "CH4O", "Cu4"}


@pytest.fixture
def data(registry):
    """5 molecules at LOW (source "mols"), H2O and CH4 also at HIGH, an unlabelled crystal."""
    mols = labelled_molecules()
    r1 = registry.ingest(mols, LOW, source="mols")
    high = labelled_molecules(("H2O", "CH4"), seed=0)
    for a in high:
        a.info["energy"] -= 1.0
    r2 = registry.ingest(high, HIGH)
    registry.ingest([crystal()], None)
    by_formula = {a.get_chemical_formula("hill"): a for a in mols}
    return {"reg": registry, "mols": by_formula, "run1": r1.run_id, "run2": r2.run_id}


def names(reg, f, level=None):
    return {r["formula"] for r in reg.query(f, level=level)}


CASES = [
    ("", ALL),
    ('elements HAS "C"', {"CH4", "C2H6", "CH4O"}),
    ('elements HAS ALL "C","O"', {"CH4O"}),
    ('elements HAS ANY "O","N"', {"H2O", "H3N", "CH4O"}),
    ('elements HAS ONLY "C","H"', {"CH4", "C2H6"}),
    ('elements HAS ONLY "Cu"', {"Cu4"}),
    ("elements LENGTH 3", {"CH4O"}),
    ("elements LENGTH >= 2", ALL - {"Cu4"}),
    ('elements IS KNOWN', ALL),
    ("nelements = 1", {"Cu4"}),
    ("nsites > 5", {"C2H6", "CH4O"}),
    ("5 < nsites", {"C2H6", "CH4O"}),
    ("nsites >= 5 AND nsites <= 6", {"CH4", "CH4O"}),
    ("nsites != 4", ALL - {"H3N", "Cu4"}),
    ('chemical_formula_reduced = "CH3"', {"C2H6"}),
    ('chemical_formula_reduced = "Cu"', {"Cu4"}),
    ('chemical_formula_reduced < "CH4"', {"C2H6"}),  # reduced formula CH3
    ('chemical_formula_hill STARTS WITH "C"', {"CH4", "C2H6", "CH4O", "Cu4"}),
    ('chemical_formula_hill STARTS "C2"', {"C2H6"}),
    ('chemical_formula_hill CONTAINS "H4"', {"CH4", "CH4O"}),
    ('chemical_formula_hill CONTAINS "h4"', set()),  # case-sensitive on both backends
    ('chemical_formula_hill ENDS WITH "O"', {"H2O", "CH4O"}),
    ('chemical_formula_hill ENDS "xxxxxxxxxxH2O"', set()),
    ('chemical_formula_anonymous = "A4B"', {"CH4"}),
    ('chemical_formula_anonymous ENDS WITH "B"', {"H2O", "CH4", "H3N", "C2H6"}),
    ("nperiodic_dimensions = 3", {"Cu4"}),
    ("nperiodic_dimensions = 0", ALL - {"Cu4"}),
    ('last_modified > "2000-01-01"', ALL),
    ('last_modified < "2000-01-01T00:00:00Z"', set()),
    ('_nnp_levels HAS "ccsd(t)/cc-pvdz"', {"H2O", "CH4"}),
    ('_nnp_levels HAS "CCSD(T)/cc-pVDZ"', {"H2O", "CH4"}),  # canonical (lower-case) names
    (f'_nnp_levels HAS ALL "{LOW}","{HIGH}"', {"H2O", "CH4"}),
    (f'_nnp_levels HAS ANY "{LOW}","{HIGH}"', ALL - {"Cu4"}),
    (f'_nnp_levels HAS ONLY "{LOW}"', {"H3N", "C2H6", "CH4O", "Cu4"}),
    ("_nnp_levels IS UNKNOWN", {"Cu4"}),
    ('_nnp_source = "mols"', ALL - {"Cu4"}),
    ('_nnp_source STARTS WITH "mo"', ALL - {"Cu4"}),
    ('NOT _nnp_source = "mols"', {"Cu4"}),  # two-valued: unknown source is "not mols"
    ("_nnp_source IS UNKNOWN", {"Cu4"}),
    # precedence: NOT > AND > OR
    ('nsites > 5 OR elements HAS "O" AND nsites < 4', {"C2H6", "CH4O", "H2O"}),
    ('(nsites > 5 OR elements HAS "O") AND nsites < 4', {"H2O"}),
    ('NOT elements HAS "C" AND nsites < 4', {"H2O"}),
    ('NOT (elements HAS "C" AND nsites < 6)', ALL - {"CH4"}),
    ('NOT (NOT elements HAS "N")', {"H3N"}),
    ('nsites < 4 OR\n  nsites > 7', {"H2O", "C2H6"}),
    # composition conditions mixed with structure and label ones, at any depth
    ('elements HAS "C" OR nperiodic_dimensions = 3', {"CH4", "C2H6", "CH4O", "Cu4"}),
    ('nperiodic_dimensions = 0 AND NOT (nsites > 4 OR elements HAS "N")', {"H2O"}),
    (f'elements HAS "C" AND (_nnp_levels HAS "{HIGH}" OR nsites = 8)', {"CH4", "C2H6"}),
    (f'NOT (_nnp_levels HAS "{HIGH}" AND chemical_formula_hill = "H2O")', ALL - {"H2O"}),
    ('elements HAS "H" AND nsites > 5 AND _nnp_source = "mols" AND nelements = 2', {"C2H6"}),
]


def test_fields_and_operators(data):
    reg = data["reg"]
    for f, want in CASES:
        assert names(reg, f) == want, f
        assert reg.count(f) == len(want), f


def test_level_fields(data):
    reg, mols = data["reg"], data["mols"]
    e = {k: a.info["energy"] for k, a in mols.items()}
    fmax = {k: float(np.linalg.norm(a.arrays["forces"], axis=1).max()) for k, a in mols.items()}
    cut = float(np.median(list(e.values())))
    assert names(reg, f"_nnp_energy < {cut}", LOW) == {k for k, v in e.items() if v < cut}
    per = {k: e[k] / len(a) for k, a in mols.items()}
    cut = float(np.median(list(per.values())))
    assert names(reg, f"_nnp_energy_per_atom >= {cut}", LOW) == \
        {k for k, v in per.items() if v >= cut}
    cut = float(np.median(list(fmax.values())))
    assert names(reg, f"_nnp_max_force > {cut}", LOW) == {k for k, v in fmax.items() if v > cut}
    assert names(reg, "_nnp_energy IS KNOWN", HIGH) == {"H2O", "CH4"}
    assert names(reg, "_nnp_energy < 0", HIGH) == {"H2O", "CH4"}
    assert names(reg, "_nnp_max_force IS KNOWN", HIGH) == {"H2O", "CH4"}
    rows = {r["formula"]: r for r in reg.query("_nnp_energy IS KNOWN", level=LOW)}
    assert rows["CH4"]["energy"] == pytest.approx(e["CH4"])
    assert rows["CH4"]["max_force"] == pytest.approx(fmax["CH4"])


def test_energy_per_atom_uses_reference_energies(data):
    reg, mols = data["reg"], data["mols"]
    refs = {"H": -13.6, "C": -1000.0, "O": -2000.0}  # no N: NH3 has no per-atom value
    reg.set_reference_energies(LOW, refs)
    want = {}
    for k, a in mols.items():
        if "N" not in a.get_chemical_symbols():
            ref = sum(refs[s] for s in a.get_chemical_symbols())
            want[k] = (a.info["energy"] - ref) / len(a)
    rows = {r["formula"]: r for r in reg.query("_nnp_energy_per_atom IS KNOWN", level=LOW)}
    assert set(rows) == set(want)
    for k, v in want.items():
        assert rows[k]["energy_per_atom"] == pytest.approx(v)
    cut = float(np.median(list(want.values())))
    assert names(reg, f"_nnp_energy_per_atom > {cut}", LOW) == \
        {k for k, v in want.items() if v > cut}


def test_id_run_and_dataset_fields(data):
    reg = data["reg"]
    h2o = reg.query('chemical_formula_hill = "H2O"')[0]
    assert names(reg, f'id = "{h2o["hash"]}"') == {"H2O"}
    assert names(reg, f'id STARTS WITH "{h2o["hash"][:12]}"') == {"H2O"}
    assert names(reg, f"id = {h2o['id']}") == {"H2O"}
    assert names(reg, f"_nnp_run = {data['run1']}") == ALL - {"Cu4"}
    assert names(reg, f"_nnp_run = {data['run2']}") == {"H2O", "CH4"}  # labels it made
    assert names(reg, f"_nnp_run HAS ANY {data['run2']}, 99999") == {"H2O", "CH4"}
    assert names(reg, f"_nnp_run != {data['run1']}") == {"Cu4"}
    v1 = reg.create_dataset_version("water", levels=[LOW], filter='elements HAS "O"',
                                    split="1,0,0")
    v2 = reg.create_dataset_version("water", levels=[LOW], filter='elements HAS "C"',
                                    split="1,0,0")
    assert (v1["version"], v2["version"]) == (1, 2)
    assert names(reg, '_nnp_dataset = "water:1"') == {"H2O", "CH4O"}
    assert names(reg, '_nnp_dataset = "water@latest"') == {"CH4", "C2H6", "CH4O"}
    assert names(reg, '_nnp_dataset HAS "water"') == {"CH4", "C2H6", "CH4O"}
    assert names(reg, '_nnp_dataset HAS ALL "water:1", "water:2"') == {"CH4O"}
    assert names(reg, '_nnp_dataset HAS ANY "water:1", "water:2"') == \
        {"H2O", "CH4", "C2H6", "CH4O"}
    assert names(reg, '_nnp_dataset != "water:1"') == ALL - {"H2O", "CH4O"}
    assert names(reg, "_nnp_dataset IS UNKNOWN") == {"H3N", "Cu4"}
    with pytest.raises(NotFound, match="water:7"):
        reg.count('_nnp_dataset = "water:7"')
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        reg.count('_nnp_dataset = "nope@latest"')


BUILDER = [
    ('elements HAS ALL "C","N" AND nsites<=12',
     Q.elements.has_all("C", "N") & (Q.nsites <= 12)),
    ('elements HAS "O" OR NOT nsites > 4', Q.elements.has("O") | ~(Q.nsites > 4)),
    ('(nsites > 5 OR elements HAS "O") AND nsites < 4',
     ((Q.nsites > 5) | Q.elements.has("O")) & (Q.nsites < 4)),
    ('elements HAS ANY "O","N"', Q.elements.has_any("O", "N")),
    ('elements HAS ONLY "C","H"', Q.elements.has_only("C", "H")),
    ('chemical_formula_hill STARTS WITH "C"', Q.chemical_formula_hill.startswith("C")),
    ('chemical_formula_hill CONTAINS "H4"', Q.chemical_formula_hill.contains("H4")),
    ('chemical_formula_anonymous ENDS WITH "B"', Q.chemical_formula_anonymous.endswith("B")),
    ('_nnp_source IS UNKNOWN', Q._nnp_source.unknown()),
    ('3 < nsites', Q.nsites > 3),
    ('nperiodic_dimensions = 3', Q["nperiodic_dimensions"] == 3),
    (f'_nnp_levels HAS ALL "{LOW}","{HIGH}"', Q._nnp_levels.has_all(LOW, HIGH)),
    ("elements LENGTH 3", Q.elements.length(3)),
]


@pytest.mark.parametrize("textual,built", BUILDER, ids=[b[0] for b in BUILDER])
def test_builder_equals_parser(textual, built):
    assert parse(textual) == built
    assert parse(str(built)) == built  # renders back to OPTIMADE text
    a = str(select(Structure.id).where(structure_filter(textual)).compile())
    b = str(select(Structure.id).where(structure_filter(built)).compile())
    assert a == b


def test_builder_results_match(data):
    reg = data["reg"]
    for textual, built in BUILDER:
        assert reg.query_ids(textual) == reg.query_ids(built)


def test_builder_refuses_misuse():
    with pytest.raises(BadInput, match="unknown field 'nsite'"):
        Q.nsite  # noqa: B018
    with pytest.raises(TypeError, match="combine filters with &"):
        (Q.nsites > 1) and (Q.nsites < 3)  # noqa: B015, B018
    with pytest.raises(BadInput, match="needs an integer"):
        Q.nsites < "x"  # noqa: B015


ERRORS = [
    ("nsites <== 3", r"syntax error at line 1, column 10"),
    ("nsites < 3 AND\n  foo = 2", r"unknown field 'foo' at line 2, column 3"),
    ("nsites = 3 AND", r"syntax error at line 1, column 15: unexpected end"),
    ('elements HAS "Xx"', r"unknown element 'Xx' at line 1, column 1"),
    ('nsites = "ten"', r"nsites needs an integer"),
    ('elements = "C"', r"comparison is not supported on elements"),
    ('nsites CONTAINS "1"', r"CONTAINS/STARTS WITH/ENDS WITH is not supported on nsites"),
    ('_nnp_dataset > "a:1"', r"operator > is not supported on _nnp_dataset"),
    ('a.b = 1', r"nested property 'a.b'"),
    ("nsites = nelements", r"comparing field nsites with field nelements"),
    ('last_modified > "yesterday"', r"ISO 8601"),
    ("_nnp_energy < 0", r"_nnp_energy needs a level of theory"),
]


def test_errors_name_problem_and_position(data, nnp, capsys):
    reg = data["reg"]
    before = counts(reg)
    for bad, message in ERRORS:
        with pytest.raises(BadInput, match=message) as info:
            reg.query(bad)
        if "syntax" in message or "unknown field" in message:
            assert "valid fields: elements, nelements, nsites" in str(info.value)
            assert all(f in str(info.value) for f in FIELDS)
        capsys.readouterr()
        assert nnp("query", bad) == 2, bad
        assert "error:" in capsys.readouterr().err
    assert nnp("query", "nsites > 1", "--format", "xml") == 2
    assert counts(reg) == before


def test_unknown_level(data):
    reg = data["reg"]
    with pytest.raises(NotFound, match="unknown level of theory 'nope'"):
        reg.count('_nnp_levels HAS "nope"')
    with pytest.raises(NotFound, match="known levels: ccsd"):
        reg.count("_nnp_energy < 0", level="nope")
    # without a session the clause still compiles: the lookup happens in SQL (no match)
    with reg.session() as s:
        q = select(func.count()).select_from(Structure).where(
            structure_filter('_nnp_levels HAS "nope"'))
        assert s.scalar(q) == 0


def test_explain_uses_indexes(data):
    """A selective element + level filter is answered from the indexes, not scans of
    ``structures``, ``labels`` or ``compositions``: element sets (a small table, which SQLite
    may scan) → their compositions of the size range → labels at the level of those
    compositions → structures by id."""
    reg = data["reg"]
    f = f'elements HAS ALL "C","H" AND nsites <= 12 AND _nnp_levels HAS "{HIGH}"'
    assert reg.count(f) == 1  # CH4
    with reg.session() as s:
        q = select(Structure.id).where(structure_filter(f, session=s))
        sql = str(q.compile(reg.engine, compile_kwargs={"literal_binds": True}))
        if reg.dialect == "postgresql":
            s.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(s.execute(text("EXPLAIN " + sql)).scalars())
            assert "Seq Scan" not in plan
        else:
            plan = "\n".join(str(r[-1]) for r in s.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "SCAN structures" not in plan.replace("SCAN structures USING", "")
    if reg.dialect == "sqlite":  # PostgreSQL's choice on a few rows says little about 10 M
        # through the element-set index (searched, or on a few rows read whole)
        comps = [line for line in plan.splitlines() if "compositions" in line]
        assert comps and all("ix_compositions_element_set_id_n_atoms_id" in c for c in comps), plan
        assert "ix_labels_ok_level_composition" in plan
    else:
        assert "on labels" in plan and "Index" in plan


def test_cli_query(data, nnp, capsys, tmp_path):
    reg = data["reg"]
    capsys.readouterr()
    assert nnp("query", 'elements HAS "C"', "--count") == 0
    assert capsys.readouterr().out.strip() == "3"
    assert nnp("query", 'elements HAS "C"', "--format", "ids") == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == reg.query_ids('elements HAS "C"')
    assert nnp("query", 'elements HAS "C"', "--format", "json", "--level", LOW,
               "--limit", "2") == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["energy"] is not None for r in rows)
    assert nnp("query", "nsites < 4", "--format", "table") == 0
    assert "H2O" in capsys.readouterr().out
    out = tmp_path / "sel.xyz"
    assert nnp("query", 'elements HAS "C"', "--level", LOW, "-o", out) == 0
    from ase.io import read

    frames = read(out, ":")
    assert sorted(a.get_chemical_formula("hill") for a in frames) == ["C2H6", "CH4", "CH4O"]
    assert all("energy" in a.calc.results for a in frames)
