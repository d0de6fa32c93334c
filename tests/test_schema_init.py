"""A new database initialises itself on first use (both backends); an old or foreign one is
refused; processes creating the same new database at once take turns."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from ase.io import write
from helpers import labelled_molecules
from sqlalchemy import inspect, text

from registry.errors import SchemaOutOfDate
from registry.store.base import Store
from registry.store.engine import (
    SCHEMA_REVISION,
    current_revision,
    is_new_database,
    make_engine,
    upgrade,
)
from registry.store.tables import metadata


def tables_of(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_new_database_gets_the_schema_once(empty_db_url, tmp_path):
    if empty_db_url.startswith("sqlite"):  # an empty file counts as new (an absent one too)
        (tmp_path / "registry.db").touch()
    with Store(empty_db_url) as store:
        assert store.created_schema
        assert current_revision(store.engine) == SCHEMA_REVISION
    assert set(metadata.tables) <= tables_of(empty_db_url)
    with Store(empty_db_url) as again:  # the second opening finds it made
        assert not again.created_schema


def test_cli_ingest_into_a_fresh_database(empty_db_url, nnp, tmp_path, monkeypatch, capsys):
    url = empty_db_url
    if url.startswith("sqlite"):  # a path whose folder does not exist yet
        url = f"sqlite:///{tmp_path / 'new' / 'place' / 'registry.db'}"
    monkeypatch.setenv("NNP_DATABASE_URL", url)
    monkeypatch.setenv("NNP_ARTIFACTS", str(tmp_path / "artifacts"))
    path = tmp_path / "mols.xyz"
    write(path, labelled_molecules(), format="extxyz")
    assert nnp("ingest", path, "--level", "pbe") == 0
    assert "created the registry schema" in capsys.readouterr().err
    assert nnp("query", "nsites > 0", "--count") == 0
    out = capsys.readouterr()
    assert out.out.strip() == "5" and "created" not in out.err


def test_older_revision_is_refused_not_upgraded(empty_db_url):
    upgrade(empty_db_url, "0006")
    with pytest.raises(SchemaOutOfDate, match=r"is at revision 0006; run `nnp db upgrade`"):
        Store(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) == "0006"
    finally:
        engine.dispose()


def test_foreign_tables_without_alembic_version_are_refused(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:  # a fixed statement: another application's table
            conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
        assert not is_new_database(engine)
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="no alembic_version table"):
        Store(empty_db_url)
    assert tables_of(empty_db_url) == {"orders"}  # nothing created beside it


OPEN = """
import os, sys, time
from registry.store.base import Store
while not os.path.exists(sys.argv[2]):  # start together
    time.sleep(0.005)
with Store(sys.argv[1]) as s:
    print(int(s.created_schema))
"""


def test_concurrent_first_opens_take_turns(empty_db_url, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "NNP_ARTIFACTS": str(tmp_path / "artifacts")}
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, empty_db_url, str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    time.sleep(1.0)  # let each import and wait at the start line
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in results]
    assert {out.strip() for out, _ in results} <= {"0", "1"}
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) == SCHEMA_REVISION
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            if engine.dialect.name == "sqlite":
                assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        engine.dispose()
    assert set(metadata.tables) <= tables_of(empty_db_url)


def test_upgrade_from_nothing_is_one_transaction(empty_db_url):
    """Reading the revision and applying every revision happen in one transaction, so a
    second process opening the same new database cannot run a revision between two of ours
    (on SQLite, Alembic would otherwise commit after each revision)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    begins, commits, writes = [], [], []

    def on_begin(conn):
        begins.append(conn)

    def on_commit(conn):
        commits.append(len(begins))

    def on_statement(conn, cursor, statement, *args):
        if statement.lstrip().split()[0].upper() in {"CREATE", "ALTER", "DROP", "INSERT",
                                                     "UPDATE"}:
            writes.append(len(begins))

    listeners = [("begin", on_begin), ("commit", on_commit),
                 ("before_cursor_execute", on_statement)]
    for name, fn in listeners:
        event.listen(Engine, name, fn)
    try:
        upgrade(empty_db_url)
    finally:
        for name, fn in listeners:
            event.remove(Engine, name, fn)
    # every write, the version row included, in the one transaction that commits
    assert len(writes) > 20 and len(set(writes)) == 1
    assert commits == writes[:1]
    engine = make_engine(empty_db_url)
    try:
        assert current_revision(engine) == SCHEMA_REVISION
    finally:
        engine.dispose()


def test_wal_switch_waits_for_a_lock_held_by_another_process(tmp_path):
    """Switching a file to WAL while another connection holds its lock answers "database is
    locked" at once (no busy handler); the connect hook retries until the lock is gone."""
    import sqlite3
    import threading

    from registry.store.engine import _wal

    path = str(tmp_path / "new.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    opener = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        opener.execute("PRAGMA journal_mode=WAL")  # what the hook met before retrying
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    t0 = time.monotonic()
    _wal(opener.cursor())
    release.join()
    assert time.monotonic() - t0 >= 0.2
    assert opener.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opener.close()
    holder.close()
