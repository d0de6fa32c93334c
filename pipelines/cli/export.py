"""``nnp export``: structures and labels to extxyz, ASE .db or ANI HDF5 (by extension)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, on_interrupt, open_registry, print_json, progress_bar


@app.command("export")
@on_interrupt("the file is written under a temporary name and removed, so OUT was not "
              "created or changed; re-run to export")
def export(
    output: Path = typer.Option(..., "--output", "-o",
                                help="OUT.xyz / .extxyz, OUT.db (ASE) or OUT.h5 / .hdf5 (ANI)."),
    level: list[str] = typer.Option(None, "--level", "-l",
                                    help="Export these levels only (repeat); then only "
                                         "structures labelled at one of them. Default: all."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
    filter: str = typer.Option(None, "--filter", "-f",
                               help="OPTIMADE filter: export only matching structures "
                                    "(see `nnp query`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Write stored structures and `ok` labels; re-ingesting the file adds nothing.

    One level: plain keys (energy, forces, ...). Several: energy_<tag>, forces_<tag>, ...
    with <tag> the level name with non-alphanumerics as '_'. The summary prints the keys
    and the `nnp ingest` command that reads each level back.
    """
    from registry.io.export import output_format

    output_format(output)  # unknown extension: an error before anything else
    with open_registry() as reg:
        progress, update = progress_bar("exporting")
        with progress:
            summary = reg.export(output, level or None, overwrite=force, on_progress=update,
                                 filter=filter)
    if as_json:
        return print_json(summary)
    console.print(f"wrote {summary['structures']} structures to [bold]{summary['path']}[/] "
                  f"({summary['format']}, {summary['size_bytes']} bytes)", highlight=False)
    for lv, keys in summary["levels"].items():
        console.print(f"  {lv}: keys {keys['energy']}, {keys['forces']}, ...", highlight=False)
        console.print(f"    read back: {summary['reingest'][lv]}", highlight=False)
