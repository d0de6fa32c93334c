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

    with open_registry() as reg:
        lin = reg.lineage(ref)
    tree = lineage_tree(lin)
    if png is not None:
        draw_png(tree, png)
    if as_json:
        return print_json(lin)
    console.print(_rich_tree(tree))
    if png is not None:
        console.print(f"drawn to {png}")


def _rich_tree(node, parent=None):
    from rich.markup import escape
    from rich.tree import Tree

    label = escape(node["label"])
    if label.startswith("missing:"):
        label = f"[yellow]{label}[/]"
    elif parent is None:
        label = f"[bold]{label}[/]"
    t = Tree(label) if parent is None else parent.add(label)
    for child in node["children"]:
        _rich_tree(child, t)
    return t


def draw_png(tree: dict, path: Path) -> None:
    """Draw the tree left to right with matplotlib (one box per node)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    placed = []  # (depth, row, label, parent index)

    def place(node, depth, parent):
        idx = len(placed)
        placed.append([depth, len(placed), node["label"], parent])
        for child in node["children"]:
            place(child, depth + 1, idx)

    place(tree, 0, None)
    depth = max(p[0] for p in placed) + 1
    fig, ax = plt.subplots(figsize=(4.2 * depth, 0.62 * len(placed) + 1))
    ax.set_xlim(-0.1, depth * 1.0 + 0.1)
    ax.set_ylim(len(placed), -1)
    ax.axis("off")
    for d, row, label, parent in placed:
        color = "#fde2c8" if label.startswith("missing") else "#dbe9f7"
        ax.text(d, row, textwrap.shorten(label, 140).replace("; ", "\n", 1), fontsize=7,
                va="center", ha="left",
                bbox={"boxstyle": "round", "fc": color, "ec": "#406080", "lw": 0.6})
        if parent is not None:
            pd, prow = placed[parent][0], placed[parent][1]
            ax.annotate("", xy=(d - 0.02, row), xytext=(pd + 0.05, prow + 0.3),
                        arrowprops={"arrowstyle": "->", "color": "#406080", "lw": 0.6,
                                    "connectionstyle": "angle,angleA=-90,angleB=180"})
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
