"""Random argument vectors for every ``nnp`` command, on both backends.

The commands come from the CLI itself (``pipelines.cli.docgen.iter_commands``), so a new
command is fuzzed without a change here. Each case runs ``nnp PATH ARGS`` in-process on a
registry holding molecules, a dataset with two versions and a model, with arguments drawn
from the command's own parameters (good values, values of the wrong type, huge and negative
numbers, empty strings, unicode, SQL-looking text, missing and unknown options) and asserts:

* exit status 0 or 2 (1 is an unexpected error: the case fails, naming the argv), never a
  traceback; a status-2 case prints ``error:`` or a usage line;
* nothing changed on status 2 (every data table's row count, and the ``ok`` labels), nothing
  changed by a command that only reads, whatever its status; after status 0 the data is
  consistent (dataset sizes, compositions, no run left running) and ``--json`` output is JSON.

Left out (:data:`EXCLUDED`): ``nnp demo`` (runs the whole demo), ``nnp train``,
``nnp evaluate``, ``nnp md``, ``nnp models verify`` and ``nnp diversity`` (start Dask
workers, train or run models, run t-SNE), and ``--yes`` on ``nnp db downgrade`` (which drops
data by design; without it the command must refuse).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .strategies import HUGE_INTS, SQLISH, filters, json_texts
from .support import (
    backend_registry,
    consistency_problems,
    fuzz_settings,
    make_workspace,
    table_counts,
    tally,
)

EXCLUDED = {("demo",): "runs the whole demo", ("train",): "starts Dask workers and trains",
            ("evaluate",): "runs a model", ("md",): "runs molecular dynamics with a model",
            ("diversity",): "starts Dask workers and runs t-SNE",
            ("models", "verify"): "runs a model (and exits 1 when a check fails)"}
NEVER = {("db", "downgrade"): {"--yes"}}  # destructive by design: must refuse without it
# Values kept out until a known bug is fixed (test_fuzz_findings.py reproduces each):
# (command, parameter) -> predicate on the value. None open.
KNOWN_BUGS: dict = {}
# Commands that only read: nothing may change, whatever their exit status.
READERS = {("stats",), ("query",), ("export",), ("lineage",), ("impact",), ("dedup",),
           ("levels", "list"), ("levels", "show"), ("dataset", "list"), ("dataset", "show"),
           ("dataset", "diff"), ("dataset", "materialize"), ("db", "current"),
           ("models", "list"), ("models", "show"), ("models", "pull"), ("models", "export"),
           ("runs", "list"), ("runs", "show")}


def commands():
    """(path without ``nnp``, click command) for every command and group not left out."""
    from pipelines.cli.docgen import iter_commands

    out = []
    for path, cmd, _ in iter_commands():
        if any(path[1:k] in EXCLUDED for k in range(2, len(path) + 1)):
            continue
        out.append((tuple(path[1:]), cmd))
    return out


# ------------------------------------------------------------------------------ values
NO_SLASH = st.characters(exclude_categories=("Cs",), exclude_characters="\x00/")
NASTY = ["", " ", "-1", "0", "1", "99999999999999999999999", "-99999999999999999999999",
         "1e400", "nan", "inf", "☃", "名前", "x" * 300, "-", "--", "--json", *SQLISH]
REFS = ["d1", "d1:1", "d1:2", "d1@latest", "d1@production", "d1:0", "d1:-1", "d1:3",
        "d1:99999999999999999999999", "d1:1:2", "d1@", "@latest", "m1", "m1:1",
        "m1@production", "m1:2", "nosuch", "nosuch:1", "bad name", "pbe"]
NAMES = ["d1", "d2", "m1", "m2", "fz", "latest", "production", "bad:name", "bad@name",
         "x" * 300, "名前", "a b", "-x", "' OR 1=1 --"]
LEVELS = ["pbe", "PBE", "wb97x/6-31g*", "nosuch", "", "  ", "x" * 300, "pbe/", "a'b"]
INPUTS = ["good.xyz", "new.xyz", "bad.xyz", "crystal.xyz", "empty.xyz", "notes.txt",
          "w.safetensors", "m1.nnp.zip", "missing.xyz", ".", "sub", "名前.xyz", "w.pt",
          "nan-cell.xyz", "far.xyz", "half-charge.xyz", "conflict.xyz", "garbage.cif",
          "notes.db", "folder.xyz"]
OUTPUTS = ["out.xyz", "out.extxyz", "out.h5", "out.db", "out.traj", "out.png", "out.json",
           "out.nnp.zip", "outdir", "sub/new/x.xyz", "/proc/x.xyz", ".", "good.xyz",
           "sub", "名前.xyz", "out.unknown", ""]
INTS = st.one_of(st.integers(-3, 12).map(str), st.sampled_from(HUGE_INTS).map(str),
                 st.sampled_from(["1.5", "abc", "", "-0", "0x10", "1e3", " 7", "٣"]))
FLOATS = st.sampled_from(["0.1", "0.5", "1", "-1", "0", "-0.0", "nan", "inf", "-inf", "1e400",
                          "1e-400", "5e-324", "abc", "", "1,5", "1e308"])
BY_NAME = {
    "ref": st.sampled_from(REFS), "ref_a": st.sampled_from(REFS),
    "ref_b": st.sampled_from(REFS), "dataset_version": st.sampled_from(REFS),
    "parent": st.sampled_from(REFS), "name": st.sampled_from(NAMES),
    "level": st.sampled_from(LEVELS), "fit": st.sampled_from(REFS + LEVELS),
    "filter": st.one_of(filters(), st.sampled_from(['nsites < 5', 'elements HAS "H"', ""])),
    "files": st.sampled_from(INPUTS), "path": st.sampled_from(INPUTS),
    "weights": st.sampled_from(INPUTS), "extra": st.sampled_from(INPUTS),
    "output": st.sampled_from(OUTPUTS), "out": st.sampled_from(OUTPUTS),
    "png": st.sampled_from(OUTPUTS),
    "split": st.sampled_from(["0.8,0.1,0.1", "1,0,0", "0.5,0.5", "-1,2,0", "nan,0,1",
                              "a,b,c", "", "0.8;0.1;0.1", "1e400,0,0", "0,0,0"]),
    "group_by": st.sampled_from(["formula", "structure", "none", "nope", ""]),
    "delta": st.sampled_from(["pbe-pbe", "wb97x/6-31g*-pbe", "pbe", "-", "nosuch-pbe"]),
    "units": st.sampled_from(["eV", "hartree", "kcal/mol", "furlongs", ""]),
    "keywords": json_texts(), "config": json_texts(), "metrics": json_texts(),
    "set_": st.sampled_from(["H=-13.6", "H=-13.6,O=-2000", "H=nan", "H=inf", "Xx=1", "H",
                             "=", "", "H=1e400", "1=-13.6", "H=-1,H=-2"]),
    "elements": st.sampled_from(["H,C,O", "H", "Xx", "", "H,H", "h,c", " , "]),
    "kind": st.sampled_from(["ingest", "dataset_create", "export", "nosuch", ""]),
    "status": st.sampled_from(["ok", "failed", "interrupted", "running", "nosuch", ""]),
    "fmt": st.sampled_from(["table", "json", "ids", "xml", ""]),
    "revision": st.sampled_from(["head", "0001", "0005", "0006", "base", "zzz", "", "heads",
                                 "+1", "-1", "0006@head"]),
    "architecture": st.sampled_from(["mlp", "ani", "", "x" * 300, "名前"]),
    "tolerance": FLOATS, "cutoff": FLOATS, "exclude_duplicates": FLOATS,
    "energy_key": st.sampled_from(["energy", "free_energy", "nosuch", ""]),
    "forces_key": st.sampled_from(["forces", "nosuch", ""]),
}


def _is(p, kind) -> bool:
    annotation = str(getattr(p, "type_descriptor", None) and p.type_descriptor.annotation)
    return kind in annotation


def value_for(p, path=()):
    """Values for parameter ``p`` of command ``path``: its own pool (by name, else by type)
    or anything."""
    own = BY_NAME.get(p.name)
    if own is None:
        if _is(p, "int"):
            own = INTS
        elif _is(p, "float"):
            own = FLOATS
        else:
            own = st.one_of(st.sampled_from(NASTY), st.text(NO_SLASH, max_size=12))
    values = st.one_of(own, own, own, st.sampled_from(NASTY))
    bug = KNOWN_BUGS.get((path, p.name))
    return values.filter(lambda v: not bug(v)) if bug else values


@st.composite
def argvs(draw, path: tuple[str, ...], cmd) -> list[str]:
    """An argument vector for ``nnp PATH``: arguments in order (required ones mostly
    present), some options (repeatable ones up to twice), sometimes an unknown option, a
    stray argument or ``--help``."""
    if not path:  # the app itself: only ways to reach no command (--debug raises by design)
        return draw(st.sampled_from([[], ["nosuchcmd"], ["--debug"], ["--debug", "nosuch"],
                                     ["--help"], ["-h"], ["--version"], [""], ["☃"]]))
    if hasattr(cmd, "list_commands"):  # a group: a sub-command that is not there, or none
        return [*path, *draw(st.sampled_from([[], ["nosuch"], [""], ["--help"], ["--json"]]))]
    never = NEVER.get(path, set())
    args, opts = [], []
    for p in cmd.params:
        if p.param_type_name == "argument":
            if draw(st.floats(0, 1)) < (0.9 if p.required else 0.5):
                n = draw(st.integers(1, 2)) if p.nargs == -1 else 1
                args += [draw(value_for(p, path)) for _ in range(n)]
            continue
        flag = p.opts[0]
        if flag in never or draw(st.floats(0, 1)) > (0.85 if p.required else 0.35):
            continue
        if getattr(p, "is_flag", False):
            opts.append([flag])
            continue
        for _ in range(draw(st.integers(1, 2)) if p.multiple else 1):
            opts.append([flag, draw(value_for(p, path))])
    opts = draw(st.permutations(opts))
    argv = [*path, *args, *(x for o in opts for x in o)]
    extra = draw(st.sampled_from([None] * 8 + ["--bogus", "stray", "--help", "-x"]))
    if extra:
        argv.insert(draw(st.integers(len(path), len(argv))), extra)
    return argv


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def workspace(request, tmp_path_factory):
    """(registry, working folder) per backend (see :func:`support.make_workspace`)."""
    work = tmp_path_factory.mktemp("cli")
    with backend_registry(request.param, tmp_path_factory) as reg, \
            pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNP_ARTIFACTS", str(work / "artifacts"))
        make_workspace(reg, work)
        yield reg, work


@pytest.fixture
def registry(workspace, monkeypatch):
    """The module's registry; the CLI runs in its working folder."""
    reg, work = workspace
    monkeypatch.chdir(work)
    monkeypatch.setenv("NNP_DATABASE_URL", reg.url)
    monkeypatch.setenv("NNP_ARTIFACTS", str(work / "artifacts"))
    monkeypatch.setenv("NNP_CACHE", str(work / "cache"))
    return reg


# ------------------------------------------------------------------------------ the test
COMMANDS = commands()


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) or "nnp" for p, _ in COMMANDS])
def test_cli_arguments_exit_0_or_2_and_change_nothing_on_error(registry, nnp, capsys, path,
                                                               cmd):
    @fuzz_settings(2, parts=len(COMMANDS))
    @given(argv=argvs(path, cmd))
    def one(argv):
        check_case(registry, nnp, capsys, path, argv)

    one()


def check_case(registry, nnp, capsys, path, argv) -> None:
    before = table_counts(registry)
    capsys.readouterr()
    code = nnp(*argv)
    out = capsys.readouterr()
    tally(f"cli {registry.dialect}", f"exit {code}")
    shown = f"nnp {' '.join(map(repr, argv))}\nstdout: {out.out[-2000:]}\nstderr: {out.err}"
    assert code in (0, 2), f"exit {code}: {shown}"
    assert "Traceback" not in out.out + out.err, shown
    after = table_counts(registry)
    if code == 2:
        # a registry error, a usage error, or help for a bare group (click's no_args_is_help)
        assert "error:" in out.err or "Usage:" in out.out + out.err, shown
        assert after == before, (before, after, shown)
        return
    if path in READERS:
        assert after == before, (before, after, shown)
    grew = {k: (before[k], after[k]) for k in before if after[k] < before[k]}
    if path == ("label", "retract"):
        grew.pop("ok labels", None)
    assert not grew, (grew, shown)  # a command that succeeded never removed rows
    problems = consistency_problems(registry)
    assert not problems, (problems, shown)
    if ("--json" in argv or "json" in argv) and out.out.lstrip()[:1] in ("{", "["):
        try:  # JSON output: strict JSON (no NaN or Infinity)
            strict_json(out.out)
        except ValueError as exc:
            pytest.fail(f"--json output is not JSON ({exc}): {shown}")
