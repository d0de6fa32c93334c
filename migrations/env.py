"""Alembic environment: runs migrations against the URL in the Alembic config."""

import os

from alembic import context

from registry.store.engine import make_engine
from registry.store.schema import Base

config = context.config
if config.config_file_name and os.environ.get("NNP_DATABASE_URL"):
    # `alembic` run from the command line: follow the registry's configuration.
    config.set_main_option("sqlalchemy.url", os.environ["NNP_DATABASE_URL"].replace("%", "%%"))
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,
            # SQLite's DDL is transactional (the engine issues BEGIN IMMEDIATE itself), but
            # Alembic assumes otherwise and would commit after each revision, letting another
            # process that opens the same new file run a revision between two of ours. One
            # transaction holds the write lock from reading the revision to the last step.
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
