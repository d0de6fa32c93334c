"""Error metrics of energy and force predictions, per split, as ``nnp train --json`` prints them.

Per split (``train``, ``val``, ``test``): ``n`` (structures), ``energy_mae_ev``,
``energy_rmse_ev`` (per structure), ``energy_mae_ev_per_atom`` (mean of |error| / atoms),
and, only when forces are scored, ``forces_mae_ev_per_a`` and ``forces_rmse_ev_per_a`` (over
every force component of every atom whose label has forces). A split without structures
has ``n`` 0 and ``None`` for the errors. Structures without an energy are left out of the
energy errors (and of ``n``).
"""

from __future__ import annotations

import numpy as np

from .data import SPLITS

ENERGY_KEYS = ("energy_mae_ev", "energy_rmse_ev", "energy_mae_ev_per_atom")
FORCE_KEYS = ("forces_mae_ev_per_a", "forces_rmse_ev_per_a")


def error_metrics(e_pred, e_true, n_atoms, f_pred=None, f_true=None) -> dict:
    """Metrics of one set of structures; forces are (M, 3) arrays of their atoms."""
    e_pred, e_true = np.asarray(e_pred, float), np.asarray(e_true, float)
    ok = np.isfinite(e_true)
    err = e_pred[ok] - e_true[ok]
    out: dict = {"n": int(ok.sum())}
    if len(err):
        out.update(energy_mae_ev=float(np.abs(err).mean()),
                   energy_rmse_ev=float(np.sqrt((err ** 2).mean())),
                   energy_mae_ev_per_atom=float(
                       (np.abs(err) / np.asarray(n_atoms, float)[ok]).mean()))
    else:
        out.update(dict.fromkeys(ENERGY_KEYS))
    if f_pred is not None:
        f_true = np.asarray(f_true, float)
        fok = np.isfinite(f_true).all(axis=1)
        ferr = (np.asarray(f_pred, float)[fok] - f_true[fok]).ravel()
        if len(ferr):
            out.update(forces_mae_ev_per_a=float(np.abs(ferr).mean()),
                       forces_rmse_ev_per_a=float(np.sqrt((ferr ** 2).mean())))
        else:
            out.update(dict.fromkeys(FORCE_KEYS))
    return out


def split_metrics(e_pred, e_true, n_atoms, split, f_pred=None, f_true=None,
                  atom_offsets=None, splits=SPLITS) -> dict:
    """``{split name: metrics}`` for structures in global order (``split`` codes 0/1/2);
    per-atom forces are located by ``atom_offsets`` (N + 1 starts)."""
    out = {}
    for name in splits:
        sel = np.asarray(split) == SPLITS.index(name)
        fp = ft = None
        if f_pred is not None:
            atoms = atom_mask(atom_offsets, sel)
            fp, ft = np.asarray(f_pred)[atoms], np.asarray(f_true)[atoms]
        out[name] = error_metrics(np.asarray(e_pred)[sel], np.asarray(e_true)[sel],
                                  np.asarray(n_atoms)[sel], fp, ft)
    return out


def atom_mask(atom_offsets, structures: np.ndarray) -> np.ndarray:
    """Per-atom boolean mask of the atoms of the selected structures."""
    counts = np.diff(atom_offsets)
    return np.repeat(np.asarray(structures, bool), counts)
