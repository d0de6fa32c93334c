"""The CLI's one error path (issue 13), on both backends: usage errors print the usage line
and exit 2, registry errors one line and exit 2, Ctrl-C ``interrupted: <what was kept>`` and
exit 130, anything else ``error: <Type>: <message>`` and exit 1; never a traceback unless
``--debug``; and nothing changes in the registry."""

from __future__ import annotations

import json
import math
import warnings

import ase.io
import pytest
from helpers import counts, labelled_molecules

from pipelines.cli.docgen import command_paths
from registry.errors import BadInput
from registry.ingest import files


def run(nnp, capsys, *args):
    """(exit status, stdout, stderr) of ``nnp ARGS``; no output may hold a traceback."""
    capsys.readouterr()
    code = nnp(*args)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err, (args, out.out, out.err)
    return code, out.out, out.err


@pytest.fixture
def seeded(registry, nnp, tmp_path):
    """A registry holding 5 structures and 5 labels at level pbe."""
    ase.io.write(tmp_path / "seed.xyz", labelled_molecules(), format="extxyz")
    assert nnp("ingest", tmp_path / "seed.xyz", "--level", "pbe") == 0
    assert counts(registry) == (5, 5)
    return registry


def runs_of(nnp, capsys, kind):
    code, out, _ = run(nnp, capsys, "runs", "list", "--kind", kind, "--json")
    assert code == 0
    return json.loads(out)


# ------------------------------------------------------------------------ usage errors

USAGE_ERRORS = [
    (("ingest",), "Missing argument"),
    (("dataset", "create", "foo"), "Missing option '--level'"),
    (("nosuchcmd",), "No such command 'nosuchcmd'"),
    (("query", "elements HAS \"H\"", "--limit", "-1"), "--limit"),
    (("query", "elements HAS \"H\"", "--limit", "many"), "--limit"),
    (("ingest", "x.xyz", "--bogus"), "No such option"),
    (("ingest", "x.xyz", "--batch-size", "0"), "--batch-size"),
    (("dataset", "create", "d", "--level", "pbe", "--seed", "-1"), "--seed"),
    (("dataset", "create", "d", "--level", "pbe", "--seed", "1.5"), "--seed"),
    (("db", "downgrade"), "Missing argument"),
    (("--debug",), "Missing command"),
]


def test_usage_errors_print_the_usage_line_and_exit_2(seeded, nnp, capsys):
    for args, says in USAGE_ERRORS:
        code, out, err = run(nnp, capsys, *args)
        assert code == 2, (args, err)
        assert "Usage: nnp" in err and says in err, (args, err)
    assert counts(seeded) == (5, 5)
    code, out, _ = run(nnp, capsys, "dataset", "list", "--json")
    assert json.loads(out) == []


def test_every_command_with_no_arguments_and_with_help(registry, nnp, capsys):
    """Each command and group: ``--help`` exits 0; no arguments is help, a usage error (2)
    or a harmless read (0); never 1, never a traceback, nothing written."""
    before = counts(registry)
    for path in command_paths():
        args = path.split()[1:]
        code, out, err = run(nnp, capsys, *args, "--help")
        assert code == 0 and "Usage: nnp" in out + err, (path, code, err)
        if args == ["demo"]:  # with no arguments the demo runs the whole demo: help only
            continue
        code, out, err = run(nnp, capsys, *args)
        assert code in (0, 2), (path, code, out, err)
        if code == 2:
            assert "Usage: nnp" in out + err or "error:" in err, (path, out, err)
    assert counts(registry) == before


# ------------------------------------------------------------------- unexpected errors
# `nnp stats` calls this function (the Store alone, not the Registry facade: a quick start)
STATS = "registry.store.stats.stats"


def test_an_unexpected_error_is_one_line_and_exit_1(registry, nnp, capsys, monkeypatch):
    def broken(reg):
        raise ZeroDivisionError("boom [at] the stats")

    monkeypatch.setattr(STATS, broken)
    code, out, err = run(nnp, capsys, "stats")
    assert code == 1
    assert "error: ZeroDivisionError: boom [at] the stats" in err
    assert "--debug" in err and len(err.strip().splitlines()) == 2
    with pytest.raises(ZeroDivisionError):  # --debug: the real traceback
        nnp("--debug", "stats")
    monkeypatch.setenv("NNP_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        nnp("stats")


def test_registry_errors_are_one_line_and_exit_2(seeded, nnp, capsys):
    code, out, err = run(nnp, capsys, "dataset", "show", "nosuch")
    assert code == 2 and err.startswith("error: ") and "nosuch" in err
    assert len(err.strip().splitlines()) == 1
    assert counts(seeded) == (5, 5)


def test_python_warnings_do_not_reach_users(registry, nnp, capsys, monkeypatch):
    from registry.store.stats import stats

    def noisy(reg):
        warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=1)
        return stats(reg)

    monkeypatch.setattr(STATS, noisy)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, out, err = run(nnp, capsys, "stats")
    assert code == 0 and "RuntimeWarning" not in out + err and not seen
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert nnp("--debug", "stats") == 0
    assert [w.category for w in seen] == [RuntimeWarning]


# ------------------------------------------------------------------------- interrupts

def test_ctrl_c_in_ingest_keeps_committed_batches_and_exits_130(registry, nnp, capsys,
                                                                   monkeypatch, tmp_path):
    frames = [a for k in range(3) for a in labelled_molecules(seed=k)]  # 15 structures
    ase.io.write(tmp_path / "many.xyz", frames, format="extxyz")
    batch, n_batches = 4, math.ceil(len(frames) / 4)
    ingest_files = files.ingest_files_into  # what `nnp ingest` calls

    def ctrl_c_after_first_batch(open_store, *args, on_progress=None, **kwargs):
        def progress(done, total):
            on_progress(done, total)
            raise KeyboardInterrupt

        return ingest_files(open_store, *args, on_progress=progress, **kwargs)

    monkeypatch.setattr(files, "ingest_files_into", ctrl_c_after_first_batch)
    code, out, err = run(nnp, capsys, "ingest", tmp_path / "many.xyz", "--level", "pbe",
                         "--batch-size", batch)
    assert code == 130
    structures, labels = counts(registry)
    # SQLite writes one batch at a time; PostgreSQL's second writer finishes its batch
    kept = math.ceil(structures / batch)
    assert 1 <= kept < n_batches and structures == labels == kept * batch
    assert (registry.dialect == "sqlite") == (kept == 1)
    assert f"interrupted: {kept} of {n_batches} batches committed" in err
    assert "re-run to complete" in err
    assert runs_of(nnp, capsys, "ingest")[0]["status"] == "interrupted"
    monkeypatch.setattr(files, "ingest_files_into", ingest_files)  # re-run: completes
    code, out, err = run(nnp, capsys, "ingest", tmp_path / "many.xyz", "--level", "pbe",
                         "--batch-size", batch)
    assert code == 0 and counts(registry) == (15, 15)


def test_ctrl_c_before_ingest_writes_says_so(registry, nnp, capsys, monkeypatch, tmp_path):
    ase.io.write(tmp_path / "a.xyz", labelled_molecules(), format="extxyz")

    def ctrl_c(open_store, *args, **kwargs):
        open_store()
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "ingest_files_into", ctrl_c)
    code, out, err = run(nnp, capsys, "ingest", tmp_path / "a.xyz", "--level", "pbe")
    assert code == 130 and "interrupted: stopped before writing anything" in err
    assert counts(registry) == (0, 0)


def test_ctrl_c_in_dataset_create_leaves_no_version(seeded, nnp, capsys, monkeypatch):
    import registry.curation.datasets as datasets

    version_dict = datasets.dataset_version_dict

    def ctrl_c(*args, **kwargs):  # inside the transaction that writes the version
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "dataset_version_dict", ctrl_c)
    code, out, err = run(nnp, capsys, "dataset", "create", "d", "--level", "pbe")
    assert code == 130 and "interrupted: a version is written in one transaction" in err
    monkeypatch.setattr(datasets, "dataset_version_dict", version_dict)
    assert runs_of(nnp, capsys, "dataset_create")[0]["status"] == "interrupted"
    code, out, _ = run(nnp, capsys, "dataset", "list", "--json")
    assert json.loads(out) == []
    assert counts(seeded) == (5, 5)


def test_ctrl_c_in_export_leaves_no_file(seeded, nnp, capsys, monkeypatch, tmp_path):
    import registry.io.export as export

    iter_frames = export.iter_frames

    def ctrl_c_after_first(*args, **kwargs):
        for batch in iter_frames(*args, **kwargs):
            yield batch
            raise KeyboardInterrupt

    monkeypatch.setattr(export, "iter_frames", ctrl_c_after_first)
    out_file = tmp_path / "out" / "all.xyz"
    out_file.parent.mkdir()
    code, out, err = run(nnp, capsys, "export", "-o", out_file)
    assert code == 130 and "interrupted:" in err and "OUT was not created" in err
    assert list(out_file.parent.iterdir()) == []
    assert runs_of(nnp, capsys, "export")[0]["status"] == "interrupted"


@pytest.mark.parametrize("args, target, says", [
    (("dedup", "--tolerance", "0.1"), "registry.core.Registry.near_duplicates",
     "nothing was changed"),
    (("stats",), STATS, "`nnp stats` stopped before it finished"),
])
def test_ctrl_c_in_any_command_exits_130(seeded, nnp, capsys, monkeypatch, args, target,
                                         says):
    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, ctrl_c)
    code, out, err = run(nnp, capsys, *args)
    assert code == 130 and f"interrupted: {says}" in err
    assert counts(seeded) == (5, 5)


def test_ctrl_c_in_demo_exits_130(registry, nnp, capsys, monkeypatch):
    import pipelines.demo

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.demo, "run_demo", ctrl_c)
    code, out, err = run(nnp, capsys, "demo")
    assert code == 130 and "interrupted: the steps finished so far stay" in err


# ---------------------------------------------------------------------------- datasets

def test_latest_dataset_alias_is_automatic(seeded, nnp, capsys):
    for _ in range(2):
        assert run(nnp, capsys, "dataset", "create", "d", "--level", "pbe")[0] == 0
    code, out, err = run(nnp, capsys, "dataset", "alias", "d:1", "latest")
    assert code == 2 and "'latest' is automatic" in err and "cannot be set" in err
    assert seeded.resolve_dataset("d")["version"] == 2
    with pytest.raises(BadInput, match="'latest' is automatic.*cannot be removed"):
        seeded.remove_dataset_alias("d", "latest")
    assert seeded.resolve_dataset("d@latest")["version"] == 2
    assert run(nnp, capsys, "dataset", "alias", "d:1", "production")[0] == 0
    assert seeded.resolve_dataset("d@production")["version"] == 1
    assert counts(seeded) == (5, 5)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_dataset_seed_must_be_a_non_negative_integer(seeded, seed):
    with pytest.raises(BadInput, match=f"seed {seed!r}: expected an integer >= 0"):
        seeded.create_dataset_version("d", levels=["pbe"], seed=seed)
    assert seeded.list_datasets() == []
    assert counts(seeded) == (5, 5)


def test_assign_splits_refuses_a_negative_seed():
    from registry.curation.splits import assign_splits

    with pytest.raises(BadInput, match="seed -1"):
        assign_splits(["a", "b"], ["x", "y"], (0.5, 0.5, 0.0), seed=-1)


# -------------------------------------------------------------------------- db upgrade

def test_db_upgrade_says_what_happened_and_refuses_downgrades(seeded, nnp, capsys):
    from registry.store.engine import current_revision, head_revision

    head = head_revision()

    def at():
        return current_revision(seeded.engine)

    code, out, err = run(nnp, capsys, "db", "upgrade")
    assert code == 0 and f"already at {head}" in out and "nothing to do" in out
    code, out, err = run(nnp, capsys, "db", "upgrade", "0003")
    assert code == 2 and f"database is at {head}, newer than 0003" in err
    assert "nnp db downgrade 0003 --yes" in err and at() == head
    for cmd in ("upgrade", "downgrade"):
        code, out, err = run(nnp, capsys, "db", cmd, "zzz")
        assert code == 2 and "unknown revision 'zzz'" in err and "0001" in err and head in err
    assert at() == head and counts(seeded) == (5, 5)


def test_db_downgrade_asks_for_yes_and_names_the_loss(seeded, nnp, capsys):
    from registry.store.engine import current_revision, head_revision

    head = head_revision()
    code, out, err = run(nnp, capsys, "db", "downgrade", "base")
    assert code == 2 and "refusing to downgrade without --yes" in err
    assert "0001  initial schema" in err and "5 structures and 5 labels would be lost" in err
    assert "nnp db downgrade base --yes" in err
    assert current_revision(seeded.engine) == head and counts(seeded) == (5, 5)
    code, out, err = run(nnp, capsys, "db", "downgrade", "0005")
    assert code == 2 and f"  {head}  " in err and "5 structures and 5 labels" in err
    assert current_revision(seeded.engine) == head
    seeded.engine.dispose()  # no pooled connection in the way of the schema change
    code, out, err = run(nnp, capsys, "db", "downgrade", "0005", "--yes")
    assert code == 0 and f"downgraded from {head} to 0005" in out
    assert current_revision(seeded.engine) == "0005"
    code, out, err = run(nnp, capsys, "db", "downgrade", head)
    assert code == 2 and f"older than {head}" in err and f"nnp db upgrade {head}" in err
    code, out, err = run(nnp, capsys, "db", "upgrade")
    assert code == 0 and f"upgraded from 0005 to {head}" in out
    assert current_revision(seeded.engine) == head and counts(seeded) == (5, 5)
