"""Issue 13, files, URLs and the file system: a wrong database URL or file, an unknown
artifact store protocol, a cache root that is a file, an output under /proc, a garbage file, a
folder or FIFO as input, a read-only database, a bad tolerance, an empty level name. Each is
one clear ``error:`` line (exit status 2, no traceback) and changes nothing, on both backends
where a database is involved (the SQLite URL cases are SQLite's own)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from helpers import counts, labelled_molecules

from registry.errors import BadInput, DatabaseUnavailable


@pytest.fixture(autouse=True)
def no_runtime_warnings():
    """None of these paths may show a RuntimeWarning to the user."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], \
        [str(w.message) for w in caught]


def rows(reg) -> tuple:
    """(structures, labels, runs, dataset versions, model versions) row counts."""
    from sqlalchemy import func, select

    from registry.store.schema import DatasetVersion, ModelVersion, Run

    with reg.session() as s:
        return counts(reg) + tuple(s.scalar(select(func.count()).select_from(t))
                                   for t in (Run, DatasetVersion, ModelVersion))


def refused(nnp, capsys, *args, expect=()) -> str:
    """Run ``nnp ARGS``: exit status 2, one ``error:`` line naming every ``expect``, and no
    traceback. Returns the error text with whitespace collapsed."""
    capsys.readouterr()
    code = nnp(*args)
    out = capsys.readouterr()
    err = " ".join(out.err.split())
    assert code == 2, (code, out.out, out.err)
    assert err.startswith("error:"), err
    assert "Traceback" not in out.err + out.out
    for text in expect:
        assert text in err, (text, err)
    return err


@pytest.fixture
def seeded(registry, nnp, tmp_path):
    """A registry holding 5 labelled molecules."""
    ase.io.write(tmp_path / "seed.xyz", labelled_molecules(), format="extxyz")
    assert nnp("ingest", tmp_path / "seed.xyz", "--level", "pbe") == 0
    assert counts(registry) == (5, 5)
    return registry


def weights(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32)}, path)
    return path


# ------------------------------------------------------------------ database URLs (SQLite)
def test_text_file_as_sqlite_database(nnp, capsys, tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not a database\n")
    monkeypatch.setenv("NNP_DATABASE_URL", f"sqlite:///{notes}")
    for args in (("stats",), ("db", "upgrade"), ("db", "current")):
        refused(nnp, capsys, *args, expect=(str(notes), "is not a SQLite database"))
    assert notes.read_text() == "meeting notes, not a database\n"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no -wal / -shm beside it

    from registry.core import Registry

    with pytest.raises(DatabaseUnavailable, match="not a SQLite database"):
        Registry(f"sqlite:///{notes}")
    fake = tmp_path / "fake.db"  # SQLite's header, then junk: SQLite itself refuses it
    fake.write_bytes(b"SQLite format 3\x00" + b"\xff" * 500)
    monkeypatch.setenv("NNP_DATABASE_URL", f"sqlite:///{fake}")
    refused(nnp, capsys, "stats", expect=(str(fake), "is not a SQLite database"))


def test_folder_or_fifo_as_sqlite_database(nnp, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NNP_DATABASE_URL", f"sqlite:///{tmp_path}")
    refused(nnp, capsys, "stats", expect=(str(tmp_path), "is a directory"))
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    monkeypatch.setenv("NNP_DATABASE_URL", f"sqlite:///{fifo}")
    refused(nnp, capsys, "db", "upgrade", expect=(str(fifo), "is not a regular file"))


def test_sqlite_url_with_two_slashes(nnp, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NNP_DATABASE_URL", "sqlite://x.db")
    for args in (("db", "upgrade"), ("stats",)):
        refused(nnp, capsys, *args,
                expect=("sqlite://x.db", "sqlite:///x.db", "sqlite:////", "two slashes"))
    assert os.listdir(tmp_path) == []

    from registry.core import Registry

    with pytest.raises(BadInput, match="sqlite:///data/x.db"):
        Registry("sqlite://data/x.db")


# ------------------------------------------------------------------ read-only database
def read_only_url(db_url: str) -> str:
    """The same database opened read-only (works as root, unlike chmod): SQLite's
    ``mode=ro`` URI, PostgreSQL's ``default_transaction_read_only``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///file:{db_url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    return db_url + "?options=-c%20default_transaction_read_only%3Don"


def test_read_only_database(seeded, db_url, nnp, capsys, tmp_path, monkeypatch):
    before = rows(seeded)
    monkeypatch.setenv("NNP_DATABASE_URL", read_only_url(db_url))
    capsys.readouterr()
    assert nnp("stats", "--json") == 0  # reading still works
    assert '"structures": 5' in capsys.readouterr().out.replace("\n", "")
    ase.io.write(tmp_path / "new.xyz", labelled_molecules(("C6H6",), seed=3), format="extxyz")
    refused(nnp, capsys, "ingest", tmp_path / "new.xyz", "--level", "pbe",
            expect=("is read-only", "nothing was written"))
    refused(nnp, capsys, "dataset", "create", "ro", "--level", "pbe",
            expect=("is read-only",))
    refused(nnp, capsys, "models", "register", "m", weights(tmp_path), "--architecture",
            "mlp", expect=("is read-only",))
    if db_url.startswith("sqlite"):
        path = db_url.removeprefix("sqlite:///")
        err = refused(nnp, capsys, "ingest", tmp_path / "new.xyz", "--level", "pbe")
        assert f"SQLite database {path} is read-only" in err
    assert rows(seeded) == before

    from registry.core import Registry

    with Registry(read_only_url(db_url)) as ro, \
            pytest.raises(DatabaseUnavailable, match="read-only"):
        ro.ensure_level("hf")
    assert rows(seeded) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the mode=ro URL "
                                               "case above covers the same path as root")
def test_chmod_read_only_sqlite_file(seeded, db_url, nnp, capsys, tmp_path):
    if not db_url.startswith("sqlite"):
        pytest.skip("file permissions are SQLite's own")
    path = Path(db_url.removeprefix("sqlite:///"))
    before = rows(seeded)
    seeded.close()  # let SQLite checkpoint before the file turns read-only
    ase.io.write(tmp_path / "new.xyz", labelled_molecules(("C6H6",), seed=3), format="extxyz")
    path.chmod(0o444)
    try:
        refused(nnp, capsys, "ingest", tmp_path / "new.xyz", "--level", "pbe",
                expect=(str(path), "read-only"))
    finally:
        path.chmod(0o644)
    assert rows(seeded) == before


def test_missing_database_opened_read_only(nnp, capsys, tmp_path, monkeypatch):
    path = tmp_path / "absent.db"
    monkeypatch.setenv("NNP_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    refused(nnp, capsys, "db", "upgrade", expect=(str(path), "does not exist"))
    assert not path.exists()


# ------------------------------------------------------------------ artifact store
def test_unknown_artifact_protocol(registry, nnp, capsys, tmp_path, monkeypatch):
    w = weights(tmp_path)
    assert nnp("models", "register", "m", w, "--architecture", "mlp") == 0
    before = rows(registry)
    monkeypatch.setenv("NNP_ARTIFACTS", "bogus://")
    capsys.readouterr()
    assert nnp("stats") == 0  # the store is only opened when an artifact is needed
    for args in (("models", "register", "m", w, "--architecture", "mlp"),
                 ("models", "pull", "m:1", "-o", tmp_path / "out")):
        refused(nnp, capsys, *args, expect=("NNP_ARTIFACTS='bogus://'", "'bogus'",
                                            "unknown protocol"))
    assert rows(registry) == before
    assert not (tmp_path / "out").exists()

    from registry.store.artifacts import ArtifactError, ArtifactStore

    with pytest.raises(ArtifactError, match="artifact store URL 'nope://x'"):
        ArtifactStore("nope://x")


# ------------------------------------------------------------------ materialize cache
def test_cache_root_is_a_file(seeded, nnp, capsys, tmp_path, monkeypatch):
    assert nnp("dataset", "create", "d", "--level", "pbe") == 0
    before = rows(seeded)
    blocker = tmp_path / "cache-file"
    blocker.write_text("x")
    monkeypatch.setenv("NNP_CACHE", str(blocker))
    refused(nnp, capsys, "dataset", "materialize", "d",
            expect=("NNP_CACHE", str(blocker), "is not a folder"))
    assert blocker.read_text() == "x"
    assert rows(seeded) == before
    with pytest.raises(BadInput, match="NNP_CACHE"):
        seeded.materialize("d")
    assert seeded.materialize("d", cache=False).cache_status == "off"


def test_cache_entry_with_a_folder_for_data_is_rebuilt(seeded, tmp_path, monkeypatch):
    seeded.create_dataset_version("d", levels="pbe")
    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "cache"))
    first = seeded.materialize("d")
    entry = tmp_path / "cache" / first.hash
    for name in ("data.bin", "manifest.json"):
        (entry / name).unlink()
        (entry / name).mkdir()
        (entry / name / "junk").write_text("x")
        again = seeded.materialize("d")
        assert again.cache_status.startswith("rebuilt"), again.cache_status
        assert (entry / name).is_file()
        np.testing.assert_array_equal(np.concatenate([b["energy"] for b in again.buckets]),
                                      np.concatenate([b["energy"] for b in first.buckets]))
        assert seeded.materialize("d").cache_status == "hit"
    (entry / "data.bin").unlink()
    (entry / "manifest.json").unlink()
    entry.rmdir()
    entry.write_text("not a folder")  # the entry itself replaced by a file
    assert seeded.materialize("d").cache_status.startswith("rebuilt")
    assert seeded.materialize("d").cache_status == "hit"


# ------------------------------------------------------------------ outputs the OS refuses
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_export_under_proc(seeded, nnp, capsys, tmp_path):
    before = rows(seeded)
    for name in ("x.xyz", "x.db", "x.h5"):
        refused(nnp, capsys, "export", "-o", f"/proc/{name}",
                expect=(f"cannot write /proc/{name}", "No such file or directory"))
    (tmp_path / "dir.xyz").mkdir()
    refused(nnp, capsys, "export", "-o", tmp_path / "dir.xyz", "--force",
            expect=(str(tmp_path / "dir.xyz"), "is a directory"))
    assert rows(seeded) == before
    assert os.listdir(tmp_path / "dir.xyz") == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_png_under_proc(registry, nnp, capsys, tmp_path):
    assert nnp("models", "register", "m", weights(tmp_path), "--architecture", "mlp") == 0
    before = rows(registry)
    refused(nnp, capsys, "lineage", "m:1", "--png", "/proc/x.png",
            expect=("cannot write PNG /proc/x.png", "No such file or directory"))
    (tmp_path / "d.png").mkdir()
    refused(nnp, capsys, "lineage", "m:1", "--png", tmp_path / "d.png",
            expect=(f"cannot write PNG {tmp_path / 'd.png'}", "Is a directory"))
    assert rows(registry) == before

    from pipelines.reporting import draw_tree_png, parity_plot

    with pytest.raises(BadInput, match="cannot write PNG /proc/p.png"):
        parity_plot({"test": (np.arange(3.0), np.arange(3.0))}, "/proc/p.png", "t")
    with pytest.raises(BadInput, match="cannot write PNG /proc/t.png"):
        draw_tree_png({"label": "a", "children": []}, "/proc/t.png")
    draw_tree_png({"label": "a", "children": []}, tmp_path / "ok.png")
    assert (tmp_path / "ok.png").stat().st_size > 0


# ------------------------------------------------------------------ input files
def test_garbage_cif(seeded, nnp, capsys, tmp_path):
    before = rows(seeded)
    for i, content in enumerate((b"garbage garbage\n", b"data_x\n\x00\x01\x02 binary",
                                 os.urandom(2000))):
        bad = tmp_path / f"bad{i}.cif"
        bad.write_bytes(content)
        err = refused(nnp, capsys, "ingest", bad, "--level", "pbe",
                      expect=(f"cannot read {bad} as cif:",))
        assert not err.rstrip().endswith(":"), err  # a reason, never an empty message
    assert rows(seeded) == before


def test_folder_or_fifo_as_input_file(seeded, nnp, capsys, tmp_path):
    import signal

    before = rows(seeded)
    folder = tmp_path / "frames.xyz"
    folder.mkdir()
    refused(nnp, capsys, "ingest", folder, "--level", "pbe",
            expect=(f"{folder} is a directory, not a file",))
    fifo = tmp_path / "pipe.xyz"
    os.mkfifo(fifo)
    # opening a FIFO without a writer would block: the alarm turns a hang into a failure
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked on the FIFO"))
    signal.alarm(20)
    try:
        refused(nnp, capsys, "ingest", fifo, "--level", "pbe",
                expect=(f"{fifo} is not a regular file", "named pipe"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert rows(seeded) == before


@pytest.mark.parametrize("level", ["", "   "])
def test_empty_level_name(seeded, nnp, capsys, tmp_path, level):
    ase.io.write(tmp_path / "new.xyz", labelled_molecules(("C6H6",), seed=3), format="extxyz")
    before = rows(seeded)
    refused(nnp, capsys, "ingest", tmp_path / "new.xyz", "--level", level,
            expect=("empty level name",))
    with pytest.raises(BadInput, match="empty level name"):
        seeded.ingest_files([tmp_path / "new.xyz"], level)
    assert rows(seeded) == before


# ------------------------------------------------------------------ near-duplicate tolerance
def test_tolerance_named_as_typed(seeded):
    from registry.curation.dedup import check_tolerance

    before = rows(seeded)
    for bad in (-1, 0, float("nan"), "abc", True):
        with pytest.raises(BadInput, match="^--exclude-duplicates"):
            seeded.near_duplicates(tolerance=bad, what="--exclude-duplicates")
        with pytest.raises(BadInput, match="^--tolerance"):
            seeded.near_duplicates(tolerance=bad)
    assert check_tolerance("0.1", "--exclude-duplicates") == 0.1
    assert rows(seeded) == before


def test_exclude_duplicates_named_as_typed(seeded, nnp, capsys):
    before = rows(seeded)
    err = refused(nnp, capsys, "dataset", "create", "d", "--level", "pbe",
                  "--exclude-duplicates", "-1", expect=("--exclude-duplicates",))
    assert "--tolerance" not in err
    assert rows(seeded) == before
