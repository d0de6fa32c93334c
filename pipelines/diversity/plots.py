"""The map as a PNG: one panel per element, points coloured by a category (with a legend) or
by a value (with a colour bar). matplotlib (Agg) is imported inside."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

MAX_LEGEND = 12  # categories shown by name; the rest are drawn grey as "other"


@dataclass
class Panel:
    title: str  # e.g. "H (5,000 of 12,345 environments)"
    coords: np.ndarray  # (n, 2)
    values: np.ndarray  # (n,) category labels (str) or numbers


def map_png(panels: list[Panel], color_by: str, title: str, *, continuous: bool = False,
            unit: str = "", order: list | None = None) -> bytes:
    """PNG bytes of ``panels`` side by side (up to three per row). Categories are drawn in
    ``order`` (default: sorted), each with its own colour and a legend entry with its count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, p in zip(axes.ravel(), panels, strict=False):
        size = float(np.clip(3000 / max(len(p.coords), 1), 1, 12))
        if continuous:
            v = np.asarray(p.values, dtype=float)
            ok = np.isfinite(v)
            sc = ax.scatter(p.coords[ok, 0], p.coords[ok, 1], c=v[ok], s=size, cmap=cmap,
                            linewidths=0, alpha=0.8, rasterized=True)
            if (~ok).any():
                ax.scatter(p.coords[~ok, 0], p.coords[~ok, 1], s=size, c="lightgrey",
                           linewidths=0, label="no value")
                ax.legend(fontsize=7, loc="best", markerscale=2)
            fig.colorbar(sc, ax=ax, shrink=0.8).set_label(f"{color_by} {unit}".strip(),
                                                          fontsize=8)
        else:
            _categories(ax, p, order, size)
        ax.set_title(p.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _categories(ax, p: Panel, order, size: float) -> None:
    import matplotlib.pyplot as plt

    values = np.asarray(p.values).astype(str)
    # colours follow the order over all panels, so a category has one colour everywhere
    shown = (list(dict.fromkeys(order or [])) or sorted(set(values.tolist())))[:MAX_LEGEND]
    colours = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    other = ~np.isin(values, shown)
    if other.any():
        ax.scatter(p.coords[other, 0], p.coords[other, 1], s=size, c="lightgrey",
                   linewidths=0, label=f"other ({int(other.sum())})", rasterized=True)
    for k, c in enumerate(shown):
        m = values == c
        if m.any():
            ax.scatter(p.coords[m, 0], p.coords[m, 1], s=size, color=colours(k % colours.N),
                       linewidths=0, alpha=0.8, label=f"{c} ({int(m.sum())})",
                       rasterized=True)
    ax.legend(fontsize=7, loc="best", markerscale=2, framealpha=0.8)
