"""Fixtures: every database test runs on SQLite and PostgreSQL.

PostgreSQL comes from NNP_TEST_POSTGRES_URL (default postgres:postgres@127.0.0.1:5432);
each test gets a throwaway database. Without a server the PostgreSQL cases skip loudly,
except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import uuid
import warnings

import pytest

PG_URL = os.environ.get(
    "NNP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
_pg_error: str | None = None
_pg_checked = False


def _admin_conninfo() -> str:
    from sqlalchemy.engine import make_url

    u = make_url(PG_URL)
    return (f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username} "
            f"password={u.password or ''} dbname={u.database or 'postgres'}")


def _pg_available() -> str | None:
    global _pg_error, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        try:
            import psycopg

            with psycopg.connect(_admin_conninfo(), connect_timeout=5):
                pass
        except Exception as exc:  # noqa: BLE001
            _pg_error = f"{type(exc).__name__}: {exc}".strip()
    return _pg_error


def new_pg_database() -> str:
    """Create an empty database on the test server; return its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"nnp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated above, not user input
    return make_url(PG_URL).set(database=name, drivername="postgresql+psycopg") \
        .render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path):
    """URL of an empty database (no schema) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    err = _pg_available()
    if err:
        msg = f"PostgreSQL test server unreachable at {PG_URL}: {err}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true requires it)")
        warnings.warn(msg, stacklevel=1)
        pytest.skip("!!! " + msg)
    url = new_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def db_url(empty_db_url):
    """URL of a database upgraded to the head schema, on each backend."""
    from registry.store.engine import upgrade

    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def registry(db_url, monkeypatch, tmp_path):
    """A :class:`registry.Registry` on each backend; NNP_* variables point at it."""
    from registry.core import Registry

    monkeypatch.setenv("NNP_DATABASE_URL", db_url)
    monkeypatch.setenv("NNP_ARTIFACTS", str(tmp_path / "artifacts"))
    reg = Registry(db_url)
    yield reg
    reg.close()


@pytest.fixture
def nnp(monkeypatch):
    """Run the CLI in-process: ``nnp("stats", "--json")`` -> (exit code, stdout, stderr)."""
    from pipelines.cli import main

    def run(*args, capsys=None):
        return main([str(a) for a in args])

    return run


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster of two single-threaded workers (training tests)."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh materialize cache, and the local cluster rather than NNP_DASK_SCHEDULER."""
    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NNP_DASK_SCHEDULER", raising=False)

