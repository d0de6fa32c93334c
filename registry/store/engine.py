"""Engines, sessions and schema upgrades for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BadInput, DatabaseUnavailable, SchemaOutOfDate

SQLITE_CACHE = -262144  # page cache of a connection, KiB (negative: a size, not pages)


def _sqlite_pragmas(dbapi_conn, _record):
    # Let SQLAlchemy issue BEGIN itself (so BEGIN IMMEDIATE works), WAL, FKs on. The page
    # size only takes effect when the file is created (before WAL is on): 32 KiB pages suit
    # rows of packed arrays (fewer page writes and checkpoints at ingest; docs/decisions/0007).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA page_size=32768")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute(f"PRAGMA cache_size={SQLITE_CACHE}")
    cur.close()


def _sqlite_begin(conn):
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created. Raises on a bad URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput(f"cannot parse database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(
                    f"cannot open SQLite database {parsed.database!r}: {exc.strerror or exc}"
                ) from None
        engine = create_engine(parsed, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    raise BadInput(f"unsupported database URL {url!r}: use sqlite:/// or postgresql+psycopg://")


def check_reachable(engine: Engine) -> None:
    """Open one connection, turning driver errors into :class:`DatabaseUnavailable`."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot reach database {engine.url.render_as_string(hide_password=True)}: {msg}"
        ) from None


def alembic_config(url: str):
    """An Alembic Config pointing at the packaged ``migrations`` scripts."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema at ``url`` (``nnp db upgrade``)."""
    from alembic import command

    check_reachable(make_engine(url))
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# The newest migration's revision id. Kept here so opening a registry need not import Alembic;
# tests/test_migrations.py checks it equals Alembic's head.
SCHEMA_REVISION = "0006"


def head_revision() -> str:
    """Alembic's head revision, read from the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the head revision."""
    rev = current_revision(engine)
    if rev != SCHEMA_REVISION:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no schema" if rev is None else f"is at revision {rev}"
        raise SchemaOutOfDate(f"database {where} {state}; run `nnp db upgrade`")


@contextmanager
def session_scope(factory: sessionmaker) -> Session:
    """One transaction: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def database_size(engine: Engine) -> int | None:
    """Size in bytes of the database (file + WAL for SQLite)."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return None
        return sum(p.stat().st_size for p in (Path(path), Path(path + "-wal")) if p.exists())
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
