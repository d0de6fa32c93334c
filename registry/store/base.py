"""The :class:`Store`: a database (engine, sessions) and an artifact store.

Every API function of the registry takes a store as its first argument (``reg``); the public
:class:`registry.Registry` is a store whose methods are those functions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from .. import config
from .artifacts import ArtifactStore
from .engine import check_reachable, ensure_schema, make_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session


class Store:
    """The database at ``url`` (default: ``NNP_DATABASE_URL`` or the embedded SQLite) and the
    artifact store at ``NNP_ARTIFACTS``.

    ``check_schema`` (default on) creates the schema of a new, empty database (then
    ``created_schema`` is true) and refuses one whose schema is old, with a message telling
    to run ``nnp db upgrade``, or that holds another application's tables
    (:func:`~registry.store.engine.ensure_schema`).
    """

    def __init__(self, url: str | None = None, *, check_schema: bool = True):
        self.url = url or config.database_url()
        self.engine = make_engine(self.url)
        check_reachable(self.engine)
        self.created_schema = ensure_schema(self.engine, self.url) if check_schema else False
        self._sessions = None  # made on first use: reads through connect() skip the ORM
        self._artifacts: ArtifactStore | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def artifacts(self) -> ArtifactStore:
        """The :class:`ArtifactStore` at ``NNP_ARTIFACTS`` (assign to replace it)."""
        if self._artifacts is None:
            self._artifacts = ArtifactStore()
        return self._artifacts

    @artifacts.setter
    def artifacts(self, store: ArtifactStore) -> None:
        self._artifacts = store

    @contextmanager
    def session(self) -> Session:
        """A session in one transaction: committed on success, rolled back on error."""
        if self._sessions is None:
            from sqlalchemy.orm import sessionmaker

            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def connect(self) -> Connection:
        """A Core connection in one transaction (committed on success, rolled back on error),
        for work on the tables of :mod:`registry.store.tables` that needs no ORM objects:
        ``sqlalchemy.orm`` is then never imported (a quick cold start)."""
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}("
                f"{self.engine.url.render_as_string(hide_password=True)!r})")
