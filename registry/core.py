"""The :class:`Registry`: one object, the whole Python API of the store.

Each concern lives in its own mixin module (levels, ingest, read, runs...); this class only
joins them and owns the engine. Nothing here imports torch, dask or ``pipelines``.
"""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from . import config
from .curation.datasets import DatasetsMixin
from .curation.dedup import DedupMixin
from .curation.errata import ErrataMixin
from .curation.reference_energies import ReferenceEnergiesMixin
from .ingest.api import IngestMixin
from .io.readers import FilesMixin
from .models.lineage import LineageMixin
from .models.versions import ModelsMixin
from .query.api import QueryMixin
from .store.engine import check_reachable, make_engine, require_schema
from .store.levels import LevelsMixin
from .store.runs import RunsMixin
from .store.structures import ReadMixin
from .training_data.materialize import MaterializeMixin


class Registry(RunsMixin, LevelsMixin, IngestMixin, ReadMixin, QueryMixin, ModelsMixin,
               LineageMixin, DatasetsMixin, MaterializeMixin, ReferenceEnergiesMixin,
               ErrataMixin, DedupMixin, FilesMixin):
    """A registry at a database URL (default: ``NNP_DATABASE_URL`` or the embedded SQLite).

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

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

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
        return f"Registry({self.engine.url.render_as_string(hide_password=True)!r})"
