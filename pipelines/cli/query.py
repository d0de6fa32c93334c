"""``nnp query``: select structures with an OPTIMADE filter; print, count or export them."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, open_registry, open_store, print_json

FORMATS = ("table", "json", "ids")
INT64_MAX = 2**63 - 1  # the largest LIMIT both backends take (a BIGINT)


@app.command("query")
def query(
    filter: str = typer.Argument(
        ..., help='OPTIMADE filter, e.g. \'elements HAS ALL "C","N" AND nsites<=12\'.'),
    level: str = typer.Option(None, "--level", "-l",
                              help="Level for _nnp_energy, _nnp_energy_per_atom, "
                                   "_nnp_max_force (and the energy columns shown)."),
    count: bool = typer.Option(False, "--count", help="Print only the number of matches."),
    limit: int = typer.Option(None, "--limit", "-n", min=0, max=INT64_MAX,
                              help="At most N structures."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json or ids."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Export the matches to OUT.xyz/.extxyz, OUT.db or "
                                     "OUT.h5 (format by extension, like `nnp export`)."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
):
    """Structures matching FILTER (fields: `nnp query --help`; see docs/queries.md).

    Fields: elements, nelements, nsites, chemical_formula_reduced/_hill/_anonymous,
    nperiodic_dimensions, id, last_modified, _nnp_levels, _nnp_energy, _nnp_energy_per_atom,
    _nnp_max_force, _nnp_source, _nnp_dataset, _nnp_run.
    """
    from registry.errors import BadInput

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if output is not None and not count:
        with open_registry() as reg:
            return _export(reg, filter, level, limit, output, force)
    from registry.query import api

    with open_store() as store:  # the query stage alone: a quick cold start
        if count:
            console.print(api.count(store, filter, level=level))
            return
        if fmt == "ids":
            for i in api.query_ids(store, filter, level=level, limit=limit):
                print(i)
            return
        rows = api.query(store, filter, level=level, limit=limit)
    if fmt == "json":
        return print_json(rows)
    _table(rows, level)


def _export(reg, filter, level, limit, output, force) -> None:
    from registry.io.export import output_format
    from registry.query import Q, as_filter

    output_format(output)  # unknown extension: an error before any work
    cond = as_filter(filter)
    if limit is not None:  # the first N by id: cut at the N-th id
        ids = reg.query_ids(cond, level=level, limit=limit)
        cond = cond & (Q.id <= ids[-1]) if ids else cond & (Q.id < 0)
    summary = reg.export(output, [level] if level else None, overwrite=force, filter=cond)
    console.print(f"wrote {summary['structures']} structures to [bold]{summary['path']}[/] "
                  f"({summary['format']})", highlight=False)


def _table(rows: list[dict], level: str | None) -> None:
    from rich.table import Table

    cols = ["id", "hash", "formula", "nsites", "nperiodic", "source"]
    if level:
        cols += ["energy", "energy_per_atom", "max_force"]
    table = Table(*cols)
    for r in rows:
        cells = [str(r["id"]), r["hash"][:12], r["formula"], str(r["nsites"]),
                 str(r["nperiodic"]), r["source"] or ""]
        if level:
            cells += ["" if r[k] is None else f"{r[k]:.6g}" for k in cols[6:]]
        table.add_row(*cells)
    console.print(table)
    console.print(f"{len(rows)} structure(s)", highlight=False)
