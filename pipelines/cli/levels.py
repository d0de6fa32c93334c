"""``nnp levels``: levels of theory."""

from __future__ import annotations

import json

import typer

from ._app import app, console, open_registry, print_json

# Ranks are INTEGER (32-bit) columns; the registry refuses values beyond, naming the range.
RANK_MAX = 2**31 - 1

levels_app = typer.Typer(help="Levels of theory.", no_args_is_help=True)
app.add_typer(levels_app, name="levels")


@levels_app.command("add")
def add(
    name: str = typer.Argument(..., help="Canonical name, e.g. wb97x/6-31g*."),
    method: str = typer.Option(None, help="Method (default: parsed from NAME)."),
    basis: str = typer.Option(None, help="Basis set (default: parsed from NAME)."),
    program: str = typer.Option(None, help="Program, e.g. orca."),
    program_version: str = typer.Option(None, help="Program version."),
    keywords: str = typer.Option(None, help="Settings as a JSON object."),
    fidelity_rank: int = typer.Option(None, min=-RANK_MAX - 1, max=RANK_MAX,
                                      help="Higher is more accurate."),
    description: str = typer.Option(None, help="Free text."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Create a level or fill in its unset fields (set fields are never changed)."""
    from registry.errors import BadInput

    kw = None
    if keywords is not None:
        try:
            kw = json.loads(keywords)
        except json.JSONDecodeError as exc:
            raise BadInput(f"--keywords is not valid JSON: {exc}") from None
    with open_registry() as reg:
        lv = reg.add_level(name, method=method, basis=basis, program=program,
                           program_version=program_version, keywords=kw,
                           fidelity_rank=fidelity_rank, description=description)
    print_json(lv) if as_json else console.print(f"level [bold]{lv['name']}[/] ({lv['hash'][:12]})")


@levels_app.command("list")
def list_levels(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List levels of theory by fidelity."""
    from rich.table import Table

    with open_registry() as reg:
        levels = reg.list_levels()
    if as_json:
        return print_json(levels)
    table = Table("name", "method", "basis", "program", "rank", "hash")
    for lv in levels:
        table.add_row(lv["name"], lv["method"], lv["basis"] or "", lv["program"] or "",
                      str(lv["fidelity_rank"]), lv["hash"][:12])
    console.print(table)


@levels_app.command("show")
def show(name: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Show one level with its reference energies."""
    with open_registry() as reg:
        lv = reg.get_level(name)
    if as_json:
        return print_json(lv)
    for k, v in lv.items():
        console.print(f"[bold]{k}[/]: {v}")
