"""``nnp db``: create, upgrade and inspect the schema."""

from __future__ import annotations

import typer

from ._app import app, console, err_console

db_app = typer.Typer(help="Schema management (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision (e.g. 0006), or "
                                                         "head.")):
    """Create or upgrade the schema at NNP_DATABASE_URL (never downgrades)."""
    from registry import config
    from registry.store.engine import upgrade as do_upgrade

    url = config.database_url()
    done = do_upgrade(url, revision)
    if not done["applied"]:
        console.print(f"schema already at [bold]{done['to']}[/] on {_safe(url)}; nothing to do",
                      highlight=False, soft_wrap=True)
        return
    console.print(f"schema upgraded from {done['from'] or '(none)'} to [bold]{done['to']}[/] "
                  f"on {_safe(url)} (applied {', '.join(done['applied'])})", highlight=False,
                  soft_wrap=True)


@db_app.command("downgrade")
def downgrade(
    revision: str = typer.Argument(..., help="Target revision (e.g. 0005), or base (no "
                                             "schema)."),
    yes: bool = typer.Option(False, "--yes", help="Do it: tables and columns of the undone "
                                                  "revisions are dropped with their data."),
):
    """Downgrade the schema (destroys data in dropped tables); asks for --yes first."""
    from registry import config
    from registry.store.engine import downgrade as do_downgrade

    url = config.database_url()
    plan = do_downgrade(url, revision, dry_run=True)
    if plan["from"] == plan["to"]:
        console.print(f"schema already at [bold]{plan['to'] or 'base'}[/] on {_safe(url)}; "
                      "nothing to do", highlight=False, soft_wrap=True)
        return
    if not yes:
        err_console.print(_refusal(plan, revision), highlight=False, soft_wrap=True,
                          markup=False)
        raise typer.Exit(2)
    do_downgrade(url, revision)
    console.print(f"schema downgraded from {plan['from']} to [bold]{plan['to'] or 'base'}[/] "
                  f"on {_safe(url)} (undid {', '.join(u['revision'] for u in plan['undone'])})",
                  highlight=False, soft_wrap=True)


def _refusal(plan: dict, revision: str) -> str:
    """What a downgrade would destroy, and the command that does it anyway."""
    rows = plan["rows"]
    held = " and ".join(f"{n} {name}" for name, n in rows.items()) or "no structures or labels"
    if plan["to"] is None:
        loss = f"every table is dropped with its rows: {held} would be lost"
    else:
        loss = (f"tables and columns these revisions added are dropped with their data "
                f"(the database holds {held})")
    undone = "\n".join(f"  {u['revision']}  {u['doc']}" for u in plan["undone"])
    return (f"error: refusing to downgrade without --yes; from {plan['from']} to "
            f"{plan['to'] or 'base'} undoes\n{undone}\n{loss}\n"
            f"run `nnp db downgrade {revision} --yes` to proceed")


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
