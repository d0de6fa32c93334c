"""PNG pictures stored with a trained model version: parity plot and learning curve.

Each function returns PNG bytes (so they go straight into ``register_model(extras=...)``);
matplotlib is imported inside them, with the Agg backend.
"""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def parity_png(energy: dict, title: str, forces: dict | None = None,
               energy_label: str = "energy (eV)") -> bytes:
    """Reference vs predicted energy per split (``{split: (ref, pred)}``) and, when given,
    force components per split, side by side."""
    plt = _pyplot()
    panels = [("energy", energy, energy_label)]
    if forces:
        panels.append(("forces", forces, "force component (eV/Å)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (_, series, label) in zip(axes[0], panels, strict=True):
        lo, hi = np.inf, -np.inf
        for name, (ref, pred) in series.items():
            ref, pred = np.asarray(ref, float).ravel(), np.asarray(pred, float).ravel()
            ok = np.isfinite(ref) & np.isfinite(pred)
            if not ok.any():
                continue
            ref, pred = ref[ok], pred[ok]
            mae = np.abs(pred - ref).mean()
            ax.scatter(ref, pred, s=6, alpha=0.6, label=f"{name} (n={len(ref)}, MAE {mae:.3g})")
            lo, hi = min(lo, ref.min(), pred.min()), max(hi, ref.max(), pred.max())
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.legend(fontsize=8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def learning_curve_png(curves: list[list[dict]], title: str) -> bytes:
    """Training loss and validation energy MAE per epoch, one line per ensemble member."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for k, curve in enumerate(curves):
        ep = [c["epoch"] for c in curve]
        a1.plot(ep, [c["train_loss"] for c in curve], lw=1, label=f"member {k}")
        val = [np.nan if c["val_energy_mae_ev"] is None else c["val_energy_mae_ev"]
               for c in curve]
        a2.plot(ep, val, lw=1, label=f"member {k}")
    a1.set_ylabel("training loss")
    a2.set_ylabel("validation energy MAE (eV)")
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)
