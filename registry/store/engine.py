"""Engines, sessions and schema upgrades for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
import stat
import time
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import create_engine, event, func, inspect, select, table, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from ..errors import BadInput, Conflict, DatabaseUnavailable, SchemaOutOfDate

SQLITE_CACHE = -262144  # page cache of a connection, KiB (negative: a size, not pages)


def _sqlite_pragmas(dbapi_conn, _record):
    # Let SQLAlchemy issue BEGIN itself (so BEGIN IMMEDIATE works), WAL, FKs on. The page
    # size only takes effect when the file is created (before WAL is on): 32 KiB pages suit
    # rows of packed arrays (fewer page writes and checkpoints at ingest; docs/decisions/0007).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA page_size=32768")
    _wal(cur)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA cache_size={SQLITE_CACHE}")
    cur.close()


def _wal(cur, wait: float = 60.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock: switching a
    new file to WAL can answer "database is locked" at once, without the busy handler (seen
    when several processes open a new file together), so the busy timeout does not cover it."""
    deadline = time.monotonic() + wait
    pause = 0.002
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def _sqlite_begin(conn):
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_file(parsed) -> tuple[str | None, bool]:
    """(file path or None in memory, opened read-only) of a SQLite URL; ``file:`` URIs
    (``sqlite:///file:PATH?mode=ro&uri=true``) name their path after ``file:``."""
    db = parsed.database
    if not db or db == ":memory:":
        return None, False
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") and db.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None, False
        path = unquote(urlsplit(db).path)
        return (path or None), parsed.query.get("mode") == "ro"
    return db, False


def _check_sqlite_file(path: str, read_only: bool) -> None:
    """Refuse a path that is not a SQLite database before SQLite sees it (a text file, a
    folder, a FIFO); create the folder of a new database."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        if read_only:
            raise DatabaseUnavailable(f"SQLite database {path} does not exist (the URL opens "
                                      f"it read-only, so it is not created)") from None
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                f"cannot open SQLite database {path!r}: {exc.strerror or exc}") from None
        return
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot open SQLite database {path!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatabaseUnavailable(f"SQLite database {path} is a directory, not a database "
                                  f"file (e.g. sqlite:///{path.rstrip('/')}/registry.db)")
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseUnavailable(f"SQLite database {path} is not a regular file")
    # The file's content is left to SQLite (its "file is not a database" is mapped to a clear
    # message by the engine's error handler): opening and closing the file here would drop
    # this process's SQLite locks on it, which POSIX advisory locks tie to the process, not to
    # the file descriptor, letting another process delete the WAL under open connections.


def _two_slashes(url: str, parsed) -> BadInput:
    name = "/".join(x for x in (parsed.host, parsed.database) if x)
    return BadInput(
        f"database URL {url!r} has two slashes, so {parsed.host!r} is read as a host name: "
        f"write sqlite:///{name} (three slashes: a path relative to the current folder) or "
        f"sqlite:////absolute/path/{name.rsplit('/', 1)[-1]} (four: an absolute path)")


def _on_sqlite_error(path: str | None):
    """Driver errors of a SQLite file turned into one-line messages naming the file."""
    where = path or ":memory:"

    def handle(ctx):
        orig = ctx.original_exception
        if not isinstance(orig, sqlite3.DatabaseError):
            return
        msg = str(orig)
        if "readonly database" in msg:
            raise DatabaseUnavailable(f"SQLite database {where} is read-only ({msg}): "
                                      f"nothing was written") from None
        if "unable to open database file" in msg and path and Path(path).exists():
            # the file exists, so what fails is writing it or its -wal/-shm files beside it
            raise DatabaseUnavailable(f"SQLite database {where} cannot be opened for writing "
                                      f"({msg}): the file or its folder is read-only or not "
                                      f"accessible; nothing was written") from None
        if "file is not a database" in msg:
            raise DatabaseUnavailable(f"{where} is not a SQLite database ({msg}); "
                                      f"check NNP_DATABASE_URL") from None

    return handle


def _on_postgresql_error(where: str):
    def handle(ctx):
        orig = ctx.original_exception
        if getattr(orig, "sqlstate", None) == "25006":  # read_only_sql_transaction
            msg = str(orig).strip().splitlines()[0]
            raise DatabaseUnavailable(f"database {where} is read-only ({msg}): "
                                      f"nothing was written") from None

    return handle


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created. Raises on a bad URL, on a
    SQLite path that is not a database, and (at use) on writes to a read-only database."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput(f"cannot parse database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.host:
            raise _two_slashes(url, parsed)
        path, read_only = _sqlite_file(parsed)
        if path is not None:
            _check_sqlite_file(path, read_only)
        engine = create_engine(parsed, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "handle_error", _on_sqlite_error(path))
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_pre_ping=True,
                               connect_args={"connect_timeout": 10})
        event.listen(engine, "handle_error",
                     _on_postgresql_error(parsed.render_as_string(hide_password=True)))
        return engine
    raise BadInput(f"unsupported database URL {url!r}: use sqlite:/// or postgresql+psycopg://")


def check_reachable(engine: Engine) -> None:
    """Open one connection, turning driver errors into :class:`DatabaseUnavailable`."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
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


def upgrade(url: str, revision: str = "head") -> dict:
    """Create or upgrade the schema at ``url`` to ``revision`` (``nnp db upgrade``).

    Returns ``{"from", "to", "applied"}`` (``applied`` empty when already there). A target
    older than the database is refused (that is a downgrade, which drops data), as is an
    unknown revision.
    """
    from alembic import command

    plan = _plan(url, revision, "upgrade")
    if plan["from"] != plan["to"]:
        command.upgrade(alembic_config(url), plan["to"])
    return {k: plan[k] for k in ("from", "to", "applied")}


def downgrade(url: str, revision: str, *, dry_run: bool = False) -> dict:
    """Downgrade the schema at ``url`` to ``revision`` (``"base"``: no schema at all).

    Returns ``{"from", "to", "undone": [{"revision", "doc"}], "rows"}``, ``rows`` being the
    structures and labels the database holds; with ``dry_run`` nothing is changed (what
    ``nnp db downgrade`` shows before it asks for ``--yes``). A target newer than the
    database is refused, as is an unknown revision.
    """
    from alembic import command

    plan = _plan(url, revision, "downgrade")
    if not dry_run and plan["from"] != plan["to"]:
        command.downgrade(alembic_config(url), plan["to"] or "base")
    return {k: plan[k] for k in ("from", "to", "undone", "rows")}


def _plan(url: str, revision: str, direction: str) -> dict:
    """Where the database is, where ``revision`` is, and the revisions in between."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    chain = list(reversed(list(script.walk_revisions())))  # base -> head, one line
    order = [sc.revision for sc in chain]
    names = {"head": order[-1], **({"base": None} if direction == "downgrade" else {})}
    wanted = str(revision).strip()
    if wanted in names:
        target = names[wanted]
    elif wanted in order:
        target = wanted
    else:
        raise BadInput(f"unknown revision {revision!r}: known revisions are "
                       f"{', '.join([*order, *names])}")
    engine = make_engine(url)
    try:
        check_reachable(engine)
        current = current_revision(engine)
        rows = _row_counts(engine)
    finally:
        engine.dispose()
    if current is not None and current not in order:
        raise Conflict(f"database is at revision {current!r}, unknown to this code (known: "
                       f"{', '.join(order)}); use the nnp-registry version that made it")

    def pos(rev):
        return -1 if rev is None else order.index(rev)

    shown = current or "no schema"
    if direction == "upgrade" and pos(current) > pos(target):
        raise Conflict(f"database is at {shown}, newer than {target}; going back drops data: "
                       f"use `nnp db downgrade {target} --yes`")
    if direction == "downgrade" and pos(target) > pos(current):
        raise Conflict(f"database is at {shown}, older than {target}; "
                       f"use `nnp db upgrade {target}`")
    lo, hi = sorted((pos(current), pos(target)))
    between = chain[lo + 1: hi + 1]
    return {"from": current, "to": target, "applied": [sc.revision for sc in between],
            "undone": [{"revision": sc.revision, "doc": sc.doc} for sc in reversed(between)],
            "rows": rows}


def _row_counts(engine: Engine) -> dict[str, int]:
    """Rows of the tables a downgrade puts at risk (those that exist)."""
    out = {}
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        for name in ("structures", "labels"):
            if name in present:
                out[name] = conn.execute(select(func.count()).select_from(table(name))).scalar()
    return out


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


# The newest migration's revision id. Kept here so opening a registry need not import Alembic;
# tests/test_migrations.py checks it equals Alembic's head.
SCHEMA_REVISION = "0008"


def head_revision() -> str:
    """Alembic's head revision, read from the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _checked_revision(engine: Engine) -> str | None:
    """:func:`current_revision`, a driver error becoming :class:`DatabaseUnavailable`."""
    try:
        return current_revision(engine)
    except DBAPIError as exc:
        where = engine.url.render_as_string(hide_password=True)
        msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot read the schema version of {where}: {msg}") from None


def require_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the head revision."""
    rev = _checked_revision(engine)
    if rev == SCHEMA_REVISION:
        return
    where = engine.url.render_as_string(hide_password=True)
    if rev is None and not is_new_database(engine):
        raise SchemaOutOfDate(
            f"database {where} has tables but no nnp-registry schema (no alembic_version "
            f"table), so it was made by something else; refusing to create the registry's "
            f"tables beside them: use a new database (or run `nnp db upgrade` to add them)")
    state = "has no schema" if rev is None else f"is at revision {rev}"
    raise SchemaOutOfDate(f"database {where} {state}; run `nnp db upgrade`")


def is_new_database(engine: Engine) -> bool:
    """Whether the database holds no tables (a SQLite file just created or empty, a PostgreSQL
    database without tables in its default schema); an ``alembic_version`` table without a
    revision (left by ``nnp db downgrade base``) counts as none."""
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        if names - {"alembic_version"}:
            return False
        return "alembic_version" not in names or conn.execute(
            text("SELECT version_num FROM alembic_version")).first() is None


# PostgreSQL advisory-lock key under which a new database's schema is created (a fixed
# 63-bit number: the first bytes of sha256("nnp-registry schema init")).
INIT_LOCK_KEY = 0x2C6A1E5B7F3D9041


def ensure_schema(engine: Engine, url: str) -> bool:
    """Require the head schema, creating it first when the database is new (True then).

    Like MLflow's tracking store, a new database (:func:`is_new_database`) gets the schema at
    the head revision on first use. Any other database must be at the head revision already:
    an older one is refused with the message naming ``nnp db upgrade`` (never upgraded
    silently), and one with tables but no ``alembic_version`` (another application's) is
    refused. Processes creating the same new database at once take turns: on PostgreSQL under
    an advisory lock, the database checked again once it is held; on SQLite the migration
    is one ``BEGIN IMMEDIATE`` transaction (the database's write lock), inside which Alembic
    reads the revision, so the second process finds the schema made and applies nothing.
    """
    if _checked_revision(engine) == SCHEMA_REVISION:  # the usual case: one query
        return False
    if not is_new_database(engine):
        require_schema(engine)  # raises, unless another process just made the schema
        return False
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(select(func.pg_advisory_lock(INIT_LOCK_KEY)))
                try:
                    if is_new_database(engine):
                        upgrade(url)
                finally:
                    conn.execute(select(func.pg_advisory_unlock(INIT_LOCK_KEY)))
                    conn.commit()
        else:
            upgrade(url)
    except DBAPIError as exc:  # e.g. a role that may not create tables
        where = engine.url.render_as_string(hide_password=True)
        msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot create the registry schema in the new database "
                                  f"{where}: {msg}") from None
    require_schema(engine)
    return True


def database_size(engine: Engine) -> int | None:
    """Size in bytes of the database (file + WAL for SQLite)."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return None
        return sum(p.stat().st_size for p in (Path(path), Path(path + "-wal")) if p.exists())
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
