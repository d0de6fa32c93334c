"""``nnp lineage REF``: what a model version was made from, as a tree, JSON or an image."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, open_registry, print_json


@app.command("lineage")
def lineage(
    ref: str = typer.Argument(..., help="Model REF: NAME, NAME:VERSION or NAME@ALIAS."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    png: Path = typer.Option(None, "--png", help="Also draw the tree to this PNG file."),
):
    """Model version -> training run -> dataset version -> label runs -> ingest runs."""
    from registry.models.lineage import lineage_tree

    from ..reporting import draw_tree_png, rich_tree

    with open_registry() as reg:
        lin = reg.lineage(ref)
    tree = lineage_tree(lin)
    if png is not None:
        draw_tree_png(tree, png)
    if as_json:
        return print_json(lin)
    console.print(rich_tree(tree))
    if png is not None:
        console.print(f"drawn to {png}")
