"""The :class:`Store`: a database (engine, sessions) and an artifact store.

Every API function of the registry takes a store as its first argument (``reg``); the public
:class:`registry.Registry` is a store whose methods are those functions.
"""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from .. import config
from .artifacts import ArtifactStore
from .engine import check_reachable, make_engine, require_schema


class Store:
    """The database at ``url`` (default: ``NNP_DATABASE_URL`` or the embedded SQLite) and the
    artifact store at ``NNP_ARTIFACTS``.

    ``check_schema`` (default on) refuses a database whose schema is missing or old, with a
    message telling to run ``nnp db upgrade``.
    """

    def __init__(self, url: str | None = None, *, check_schema: bool = True):
        self.url = url or config.database_url()
        self.engine = make_engine(self.url)
        check_reachable(self.engine)
        if check_schema:
            require_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
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
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}("
                f"{self.engine.url.render_as_string(hide_password=True)!r})")
