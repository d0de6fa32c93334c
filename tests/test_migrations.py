"""Alembic: upgrade -> downgrade -> upgrade on both backends."""

from sqlalchemy import inspect

from registry.db import current_revision, downgrade, head_revision, make_engine, upgrade
from registry.schema import Base


def test_upgrade_downgrade_upgrade(empty_db_url):
    engine = make_engine(empty_db_url)
    upgrade(empty_db_url)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    downgrade(empty_db_url, "base")
    assert set(inspect(engine).get_table_names()) & set(Base.metadata.tables) == set()
    upgrade(empty_db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_schema_revision_constant_is_head():
    from registry.db import SCHEMA_REVISION

    assert SCHEMA_REVISION == head_revision()


def test_schema_matches_models(db_url):
    """The migrations create exactly what the ORM declares (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_registry_refuses_missing_schema(empty_db_url):
    import pytest

    from registry.core import Registry
    from registry.errors import SchemaOutOfDate

    with pytest.raises(SchemaOutOfDate, match="nnp db upgrade"):
        Registry(empty_db_url)
