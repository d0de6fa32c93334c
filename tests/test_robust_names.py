"""Strings, integers and filters from users (issue 13), on both backends: a name or value
longer than its column, an integer beyond its column or beyond 64 bits, a filter nested or
wide beyond the limits. Each is answered the same on SQLite and PostgreSQL, or refused with
one line naming the problem (exit status 2, no traceback), and changes nothing."""

from __future__ import annotations

import json
import math
import operator
import zipfile

import ase.io
import numpy as np
import pytest
from helpers import counts, labelled_molecules
from sqlalchemy import func, select

from registry.errors import BadInput, NotFound
from registry.query import Q, ast
from registry.store.schema import (
    Composition,
    Dataset,
    DatasetVersion,
    LevelOfTheory,
    Model,
    ModelAlias,
    ModelFile,
    ModelVersion,
    Run,
)

HUGE = 99999999999999999999999  # beyond 64 bits
TABLES = (Composition, LevelOfTheory, Model, ModelVersion, ModelFile, ModelAlias, Dataset,
          DatasetVersion, Run)


def snapshot(reg) -> tuple:
    """Row counts of structures, labels and every table a refused command could touch."""
    with reg.session() as s:
        return counts(reg) + tuple(s.scalar(select(func.count()).select_from(t))
                                   for t in TABLES)


def refused(reg, nnp, capsys, *args, expect=(), exit_code=2) -> str:
    """Run ``nnp ARGS``: the exit status, one message holding every ``expect`` text, no
    traceback, and no row written anywhere."""
    capsys.readouterr()
    before = snapshot(reg)
    code = nnp(*args)
    err = capsys.readouterr().err
    assert code == exit_code, err
    flat = " ".join(err.split())
    assert "Traceback" not in err, err
    for text in expect:
        assert text in flat, (text, flat)
    assert snapshot(reg) == before
    return flat


def refused_api(reg, exc, match, fn, *args, **kwargs):
    before = snapshot(reg)
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
    assert snapshot(reg) == before


@pytest.fixture
def seeded(registry, nnp, tmp_path):
    """5 labelled molecules at level pbe (source "mols") and model m:1 with a weights file."""
    from safetensors.numpy import save_file

    ase.io.write(tmp_path / "seed.xyz", labelled_molecules(), format="extxyz")
    assert nnp("ingest", tmp_path / "seed.xyz", "--level", "pbe", "--source", "mols") == 0
    save_file({"w": np.arange(6, dtype=np.float32)}, tmp_path / "w.safetensors")
    assert nnp("models", "register", "m", tmp_path / "w.safetensors",
               "--architecture", "mlp") == 0
    return registry


# ---------------------------------------------------------------- strings longer than columns
def test_long_level_names_and_fields(seeded, nnp, capsys, tmp_path):
    reg = seeded
    refused(reg, nnp, capsys, "levels", "add", "a" * 200,
            expect=("method of level", "200 characters, at most 128"))
    refused(reg, nnp, capsys, "levels", "add", "b" * 300,
            expect=("level-of-theory name", "300 characters, at most 255"))
    refused(reg, nnp, capsys, "levels", "add", "x/" + "c" * 150,
            expect=("basis of level", "150 characters, at most 128"))
    refused(reg, nnp, capsys, "levels", "add", "pbe0", "--program", "p" * 200,
            expect=("level program", "200 characters, at most 128"))
    refused(reg, nnp, capsys, "levels", "add", "pbe0", "--program-version", "1" * 65,
            expect=("level program version", "65 characters, at most 64"))
    refused(reg, nnp, capsys, "levels", "add", "pbe0", "--method", "m" * 129,
            expect=("level method", "129 characters, at most 128"))
    refused(reg, nnp, capsys, "levels", "add", "pbe0", "--keywords", '{"scf": NaN}',
            expect=("level keywords", "NaN"))
    ase.io.write(tmp_path / "more.xyz", labelled_molecules(("CH4",), seed=3), format="extxyz")
    refused(reg, nnp, capsys, "ingest", tmp_path / "more.xyz", "--level", "d" * 200,
            expect=("200 characters, at most 128",))
    # the longest accepted: exactly the column lengths
    assert nnp("levels", "add", "e" * 128 + "/" + "f" * 126, "--program", "p" * 128,
               "--program-version", "1" * 64) == 0
    assert reg.get_level("e" * 128 + "/" + "f" * 126)["program"] == "p" * 128
    refused_api(reg, BadInput, "fidelity rank 3000000000 is out of range", reg.add_level,
                "pbe0", fidelity_rank=3_000_000_000)
    refused_api(reg, BadInput, "level description .* NUL", reg.add_level, "pbe0",
                description="a\x00b")


def test_long_nnp_user_refused_at_first_write(seeded, nnp, capsys, tmp_path, monkeypatch):
    reg = seeded
    ase.io.write(tmp_path / "more.xyz", labelled_molecules(("CH4", "NH3"), seed=3),
                 format="extxyz")
    monkeypatch.setenv("NNP_USER", "u" * 200)
    message = ("NNP_USER is longer than 128 characters (200)",)
    refused(reg, nnp, capsys, "ingest", tmp_path / "more.xyz", "--level", "pbe", expect=message)
    refused(reg, nnp, capsys, "ingest", tmp_path / "more.xyz", "--level", "new-level",
            expect=message)  # refused before the level is created, too
    refused(reg, nnp, capsys, "levels", "add", "b3lyp", expect=message)
    refused(reg, nnp, capsys, "models", "alias", "m:1", "production", expect=message)
    refused(reg, nnp, capsys, "models", "register", "m", tmp_path / "w.safetensors",
            "--architecture", "mlp", expect=message)
    monkeypatch.setenv("NNP_USER", "u" * 128)  # the longest stored whole
    assert nnp("ingest", tmp_path / "more.xyz", "--level", "pbe") == 0
    assert reg.list_runs(kind="ingest", limit=1)[0]["user"] == "u" * 128


def test_long_model_fields(seeded, nnp, capsys, tmp_path):
    reg = seeded
    w = tmp_path / "w.safetensors"
    refused(reg, nnp, capsys, "models", "register", "m", w, "--architecture", "a" * 200,
            expect=("architecture", "200 characters, at most 128"))
    refused(reg, nnp, capsys, "models", "register", "n" * 256, w, "--architecture", "mlp",
            expect=("invalid model name", "at most 255 characters"))
    refused(reg, nnp, capsys, "models", "alias", "m:1", "p" * 65,
            expect=("invalid alias", "at most 64 characters"))
    refused_api(reg, BadInput, "model description .* NUL", reg.register_model, "m",
                {"w": np.zeros(2)}, architecture="mlp", description="a\x00b")
    refused_api(reg, BadInput, "retraction reason .* NUL", reg.retract_model, "m:1", "x\x00")
    # exactly at the limits: stored whole
    assert nnp("models", "register", "n" * 255, w, "--architecture", "a" * 128) == 0
    assert reg.show_model("n" * 255)["architecture"] == "a" * 128


@pytest.mark.parametrize("cutoff", ["inf", "-inf", "nan", "0", "-1"])
def test_cutoff_must_be_finite_and_positive(seeded, nnp, capsys, tmp_path, cutoff):
    refused(seeded, nnp, capsys, "models", "register", "m", tmp_path / "w.safetensors",
            "--architecture", "mlp", "--cutoff", cutoff,
            expect=("cutoff must be positive and finite",))


def test_non_finite_json_refused(seeded, nnp, capsys, tmp_path):
    w = tmp_path / "w.safetensors"
    for option in ("--metrics", "--config"):
        refused(seeded, nnp, capsys, "models", "register", "m", w, "--architecture", "mlp",
                option, '{"x": Infinity}', expect=("is not JSON-serialisable",))


# ---------------------------------------------------------------- models import --name
def _bundle(reg, tmp_path, edit=None):
    path = tmp_path / "m.nnp.zip"
    reg.export_model("m:1", path)
    if edit is None:
        return path
    with zipfile.ZipFile(path) as z:
        items = {i.filename: z.read(i) for i in z.infolist()}
    manifest = json.loads(items["manifest.json"])
    edit(manifest)
    items["manifest.json"] = json.dumps(manifest).encode()
    out = tmp_path / "edited.nnp.zip"
    with zipfile.ZipFile(out, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)
    return out


@pytest.mark.parametrize("name,message", [
    ("bad:name", "invalid model name 'bad:name'"),
    ("x'; DROP TABLE models; --", "invalid model name"),
    ("", "empty name"),
    ("   ", "empty name"),
    ("n" * 300, "at most 255 characters"),
])
def test_import_name_is_checked_like_register(seeded, nnp, capsys, tmp_path, name, message):
    bundle = _bundle(seeded, tmp_path)
    refused(seeded, nnp, capsys, "models", "import", bundle, "--name", name, expect=(message,))


def test_import_checks_the_bundle_itself(seeded, nnp, capsys, tmp_path):
    reg = seeded

    def set_(key, value):
        return lambda m: m["model"].__setitem__(key, value)

    for edit, message in [
        (set_("name", "bad:name"), "invalid model name in bundle"),
        (set_("name", "n" * 300), "at most 255 characters"),
        (set_("architecture", "a" * 200), "200 characters, at most 128"),
        (set_("cutoff", float("inf")), "cutoff must be positive and finite"),
        (set_("metrics", {"rmse": float("nan")}), "metrics is not JSON"),
        (set_("level", "l" * 300), "300 characters, at most 255"),
        (set_("elements", "HHe"), "elements must be a list"),
        (set_("dataset_version", {"hash": "f" * 100}), "at most 64"),
    ]:
        refused(reg, nnp, capsys, "models", "import", _bundle(reg, tmp_path, edit),
                expect=(message,))
    # a good bundle still imports, under its own name or another valid one
    assert nnp("models", "import", _bundle(reg, tmp_path)) == 0
    assert nnp("models", "import", _bundle(reg, tmp_path), "--name", "copy") == 0
    assert reg.show_model("m")["version"] == 2 and reg.show_model("copy")["version"] == 1


# ---------------------------------------------------------------- integers beyond range
def test_huge_integers_in_the_cli(seeded, nnp, capsys):
    reg = seeded
    big = str(HUGE)
    top = str(2**63 - 1)
    refused(reg, nnp, capsys, "query", "nsites > 1", "--limit", big, expect=("--limit", top))
    refused(reg, nnp, capsys, "query", "nsites > 1", "--limit", "-1", expect=("--limit", "0"))
    refused(reg, nnp, capsys, "runs", "show", big, expect=("run_id", top))
    refused(reg, nnp, capsys, "runs", "list", "--limit", big, expect=("--limit", top))
    refused(reg, nnp, capsys, "runs", "list", "--status", "bogus",
            expect=("unknown run status 'bogus'", "interrupted"))
    refused(reg, nnp, capsys, "models", "list", "m", "--limit", big, expect=("--limit", top))
    refused(reg, nnp, capsys, "models", "list", "m", "--before", big, expect=("--before", top))
    refused(reg, nnp, capsys, "levels", "add", "pbe0", "--fidelity-rank", "3000000000",
            expect=("--fidelity-rank", "2147483647"))
    for ref in (f"m:{big}", "m:3000000000", "m:²"):
        refused(reg, nnp, capsys, "models", "show", ref,
                expect=("invalid version", "positive integer up to 2147483647"))
        refused(reg, nnp, capsys, "lineage", ref, expect=("invalid version",))
    capsys.readouterr()
    assert nnp("query", f"id = {big} OR nsites > {big}", "--count") == 0
    assert capsys.readouterr().out.strip() == "0"
    refused(reg, nnp, capsys, "impact", "--label", big, expect=(f"no label with id {big}",))


def test_huge_integers_in_the_api(seeded):
    reg = seeded
    refused_api(reg, NotFound, f"no run with id {HUGE}", reg.get_run, HUGE)
    refused_api(reg, NotFound, "no run with id -1", reg.get_run, -1)
    refused_api(reg, NotFound, f"no label with id {HUGE}", reg.impact, label_ids=[HUGE])
    refused_api(reg, BadInput, "label id must be an integer", reg.impact, label_ids=["x"])
    refused_api(reg, BadInput, "invalid version", reg.show_model, f"m:{HUGE}")
    refused_api(reg, BadInput, "limit .* out of range", reg.query_ids, limit=HUGE)
    refused_api(reg, BadInput, "limit .* out of range", reg.query, limit=-1)
    refused_api(reg, BadInput, "limit .* out of range", reg.list_runs, limit=HUGE)
    refused_api(reg, NotFound, f"no model version with id {HUGE}", reg.show_model, HUGE)
    refused_api(reg, NotFound, f"no run with id {HUGE}", reg.register_model, "m",
                {"w": np.zeros(2)}, architecture="mlp", run=HUGE)
    assert reg.retract_labels(level="pbe", reason="r", label_ids=[HUGE])["retracted"] == 0
    assert [v["version"] for v in reg.list_model_versions("m", before=HUGE)] == [1]
    assert reg.list_model_versions("m", before=-HUGE) == []
    assert reg.query_ids("", limit=2**63 - 1) == reg.query_ids("")


def _rows(reg):
    rows = reg.query("")
    assert len(rows) == 5
    return rows


CMP = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}
LITERALS = [40000, 3_000_000_000, 2**63 - 1, 2**63, HUGE, 10**400, -40000, -3_000_000_000,
            -(2**63), -HUGE]


@pytest.mark.parametrize("field,column", [("nsites", "nsites"), ("nelements", "nelements"),
                                          ("nperiodic_dimensions", "nperiodic"),
                                          ("id", "id")])
def test_huge_filter_literals_same_answer_on_both_backends(seeded, field, column):
    """Each comparison with a literal beyond the column's range (SMALLINT, INTEGER, BIGINT or
    beyond 64 bits) counts what Python's own comparison counts, and NOT counts the rest."""
    reg = seeded
    rows = _rows(reg)
    for value in LITERALS:
        for op, fn in CMP.items():
            expected = sum(1 for r in rows if fn(r[column], value))
            text = f"{field} {op} {value}"
            assert reg.count(text) == expected, text
            assert reg.count(f"NOT {text}") == 5 - expected, text
            assert reg.count(f"{value} {op} {field}") == sum(
                1 for r in rows if fn(value, r[column])), text
    assert reg.count("nsites > 3e9") == 0 and reg.count("nsites < 3e9") == 5
    assert reg.count("elements LENGTH > 40000") == 0
    assert reg.count("elements LENGTH < 40000") == 5
    assert reg.count(f"_nnp_run = {HUGE}") == 0 and reg.count(f"_nnp_run != {HUGE}") == 5
    assert reg.count(f"_nnp_run HAS ANY {HUGE}, -{HUGE}") == 0
    assert reg.count(f"_nnp_energy < {10**400}", level="pbe") == 5
    assert reg.count(f"_nnp_energy > -{10**400}", level="pbe") == 5
    assert reg.query_ids(Q.id == HUGE) == [] and len(reg.query_ids(Q.id != HUGE)) == 5


def test_unreadable_numbers_refused(seeded, nnp, capsys):
    reg = seeded
    refused_api(reg, BadInput, "has 5000 digits; numbers have at most 1000", reg.count,
                "nsites > " + "9" * 5000)
    refused(reg, nnp, capsys, "query", "nsites > " + "9" * 5000, expect=("5000 digits",))
    refused_api(reg, BadInput, "needs a number, got NaN", lambda: Q._nnp_energy < math.nan)
    refused_api(reg, BadInput, "nsites needs an integer", reg.count, "nsites < 1e400")
    refused_api(reg, BadInput, "between years 1 and 9999", reg.count,
                'last_modified > "0001-01-01T00:00:00+01:00"')
    for text in ('_nnp_source = "a\x00b"', 'id = "a\x00"', 'id STARTS "\x00"'):
        refused_api(reg, BadInput, "contains a NUL character", reg.count, text)


# ---------------------------------------------------------------- filter depth and width
def _nested(depth: int, innermost: str = "nsites > 0") -> str:
    """``depth`` nested parentheses, each a level of OR inside AND inside OR...; true for
    every structure (each level adds a condition no structure meets, or all meet)."""
    text = innermost
    for k in range(depth):
        text = f"NOT id = -{k} AND ({text})" if k % 2 else f"id = -{k} OR ({text})"
    return text


def test_deep_nesting_answered_up_to_the_limit(seeded):
    reg = seeded
    limit = ast.MAX_DEPTH
    deepest = _nested(limit, "_nnp_energy_per_atom < 0")
    assert ast.measure(reg_parse(deepest))[0] == limit
    assert reg.count(deepest, level="pbe") == 5
    assert reg.count(_nested(limit)) == 5
    assert reg.count("(" * limit + "nsites > 0" + ")" * limit) == 5
    assert reg.count("NOT (" * limit + "nsites > 0" + ")" * limit) == 5
    assert reg.count("NOT (" * (limit - 1) + "nsites > 0" + ")" * (limit - 1)) == 0
    assert reg.count(f"NOT ({_nested(limit - 1)})") == 0
    reg.set_reference_energies("pbe", {"H": -1.0, "C": -2.0, "N": -3.0, "O": -4.0})
    assert reg.count(deepest, level="pbe") == reg.count("_nnp_energy_per_atom < 0",
                                                        level="pbe")


def reg_parse(text):
    from registry.query import parse

    return parse(text)


def test_deep_nesting_refused_beyond_the_limit(seeded, nnp, capsys):
    reg = seeded
    for text, depth in [("(" * 200 + "nsites > 1" + ")" * 200, 200),
                        (_nested(ast.MAX_DEPTH + 5), ast.MAX_DEPTH + 5),
                        ("NOT (" * 300 + "nsites > 1" + ")" * 300, 300)]:
        message = f"filter nests {depth} levels deep"
        refused_api(reg, BadInput, message, reg.count, text)
        refused(reg, nnp, capsys, "query", text, "--count",
                expect=(message, f"the limit is {ast.MAX_DEPTH}"))
        refused(reg, nnp, capsys, "label", "retract", "--level", "pbe", "--reason", "r",
                "--filter", text, expect=(message,))
    # built in Python: as deep as wanted, refused the same way (never a RecursionError)
    built = Q.nsites > 0
    for k in range(5000):
        built = (Q.id != -k) & built if k % 2 else (Q.id == -k) | built
    refused_api(reg, BadInput, "filter nests 5000 levels deep", reg.count, built)
    many_nots = Q.nsites > 0
    for _ in range(5001):
        many_nots = ast.Not(many_nots)
    assert reg.count(many_nots) == 0  # NOT is no level: an odd number of them negates


@pytest.mark.parametrize("n", [500, 1000])
def test_wide_filters_answered(seeded, n):
    reg = seeded
    ids = reg.query_ids("")
    assert reg.count(" OR ".join(f"id = {i}" for i in range(n))) == sum(i < n for i in ids)
    assert reg.count(" AND ".join(f"NOT id = {i + 1000}" for i in range(n))) == 5
    assert reg.count(" AND ".join(f"id != {i + 1000}" for i in range(n))) == 5
    assert reg.count(" OR ".join(f"nsites > {i + 3}" for i in range(n))) == sum(
        r["nsites"] > 3 for r in _rows(reg))
    mixed = ["id = -{}", "nsites = 10{}", '_nnp_source = "s{}"', "_nnp_energy < -100{}",
             'chemical_formula_hill STARTS "X{}"', '_nnp_source CONTAINS "q{}"',
             '_nnp_levels HAS "pbe"', "_nnp_run = -{}"]
    text = " OR ".join(mixed[i % len(mixed)].format(i) for i in range(n))
    assert reg.count(text, level="pbe") == 5
    grouped = " OR ".join(f"(id = {-i} AND nsites > 1)" if i % 2 else
                          f"(_nnp_energy > 0 AND NOT nsites = {i})" for i in range(n // 2))
    assert reg.count(grouped, level="pbe") == 0
    assert reg.count(f"NOT ({grouped})", level="pbe") == 5


def test_too_wide_filters_refused(seeded, nnp, capsys):
    reg = seeded
    text = " OR ".join(f"id = {i}" for i in range(2000))
    refused_api(reg, BadInput, "filter has 2000 conditions.*the limit is 1000", reg.count, text)
    refused(reg, nnp, capsys, "query", text, expect=("filter has 2000 conditions",))
    has = "_nnp_run HAS ANY " + ", ".join(str(i) for i in range(1, 1002))
    refused_api(reg, BadInput, "filter has 1001 conditions", reg.count, has)
    built = Q.id == 0
    for i in range(1, 1001):
        built = built | (Q.id == i)
    refused_api(reg, BadInput, "filter has 1001 conditions", reg.count, built)


def test_merged_conditions_match_each_alone(seeded):
    """OR'd equalities sent as one IN list, and AND'ed NOT equalities as one NOT IN, select
    what the conditions select one by one (union, intersection of complements)."""
    reg = seeded
    ids = reg.query_ids("")
    run = reg.list_runs(kind="ingest", limit=1)[0]["id"]
    groups = [
        [f"id = {ids[0]}", f"id = {ids[2]}", f"id = {HUGE}", f'id = "{"0" * 64}"'],
        ["nsites = 3", "nsites = 5", "nsites = 3000000000", "nelements = 2"],
        ['_nnp_source = "mols"', '_nnp_source = "other"', 'elements HAS "N"',
         'elements HAS ANY "O", "Cu"'],
        [f"_nnp_run = {run}", f"_nnp_run HAS ANY {run + 1}, {HUGE}", '_nnp_levels HAS "pbe"',
         f"id = {ids[1]}"],
    ]
    everything = set(ids)
    for conds in groups:
        alone = [set(reg.query_ids(c)) for c in conds]
        assert set(reg.query_ids(" OR ".join(conds))) == set.union(*alone), conds
        assert set(reg.query_ids(" AND ".join(f"NOT {c}" for c in conds))) == \
            everything - set.union(*alone), conds
        assert set(reg.query_ids(f"NOT ({' OR '.join(conds)})")) == \
            everything - set.union(*alone), conds


def test_dataset_note_with_a_nul_character(seeded, nnp, capsys):
    refused(seeded, nnp, capsys, "dataset", "create", "d", "--level", "pbe",
            "--note", "bad\x00note", expect=("note", "NUL"))
    refused_api(seeded, BadInput, "NUL", seeded.create_dataset_version, "d", levels="pbe",
                note="x\x00")


def test_printed_json_is_always_valid(capsys):
    from pipelines.cli._app import print_json

    print_json({"mae": float("nan"), "curve": [1.0, float("inf")], "n": 3})
    assert json.loads(capsys.readouterr().out) == {"mae": None, "curve": [1.0, None], "n": 3}
