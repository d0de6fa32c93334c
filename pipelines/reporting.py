"""Pictures and trees shown to people, shared by the CLI and the demo: lineage trees (rich or
PNG) and parity plots. matplotlib and rich are imported inside each function."""

from __future__ import annotations

from pathlib import Path

from registry.errors import BadInput


def _save(fig, path, **kwargs) -> None:
    """Write ``fig`` to ``path`` and close it; an OS error is BadInput naming the file."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, **kwargs)
    except OSError as exc:
        raise BadInput(f"cannot write PNG {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # matplotlib: an extension it cannot write
        raise BadInput(f"cannot write PNG {path}: {exc}") from None
    finally:
        plt.close(fig)


def rich_tree(node, parent=None):
    """A rich ``Tree`` of a ``{label, children}`` tree (missing items in yellow)."""
    from rich.markup import escape
    from rich.tree import Tree

    label = escape(node["label"])
    if label.startswith("missing:"):
        label = f"[yellow]{label}[/]"
    elif parent is None:
        label = f"[bold]{label}[/]"
    t = Tree(label) if parent is None else parent.add(label)
    for child in node["children"]:
        rich_tree(child, t)
    return t


def draw_tree_png(tree: dict, path: Path) -> None:
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
    _save(fig, path, dpi=120, bbox_inches="tight")


def parity_plot(predictions: dict, path, title: str) -> None:
    """Write a parity plot (reference vs predicted energy per split) as PNG."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    lo, hi = np.inf, -np.inf
    for name, (ref, pred) in predictions.items():
        ax.scatter(ref, pred, s=8, alpha=0.7, label=f"{name} (n={len(ref)})")
        lo, hi = min(lo, ref.min(), pred.min()), max(hi, ref.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("reference energy (eV)")
    ax.set_ylabel("predicted energy (eV)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
