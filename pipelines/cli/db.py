"""``nnp db``: create, upgrade and inspect the schema."""

from __future__ import annotations

import typer

from ._app import app, console

db_app = typer.Typer(help="Schema management (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")):
    """Create or upgrade the schema at NNP_DATABASE_URL."""
    from registry import config
    from registry.store.engine import upgrade as do_upgrade

    url = config.database_url()
    do_upgrade(url, revision)
    console.print(f"schema at [bold]{revision}[/] on {_safe(url)}")


@db_app.command("downgrade")
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")):
    """Downgrade the schema (destroys data in dropped tables)."""
    from registry import config
    from registry.store.engine import downgrade as do_downgrade

    do_downgrade(config.database_url(), revision)
    console.print(f"schema at [bold]{revision}[/]")


@db_app.command("current")
def current():
    """Print the schema revision of the database and the code's head revision."""
    from registry import config
    from registry.store.engine import check_reachable, current_revision, head_revision, make_engine

    engine = make_engine(config.database_url())
    check_reachable(engine)
    console.print(f"database: {current_revision(engine) or '(none)'}  head: {head_revision()}")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
