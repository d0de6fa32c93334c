"""Atomic reference (self) energies per level: set by hand or fit by least squares.

The fit solves ``E_i ≈ Σ_z count_iz · e_z`` over the labels a dataset version pins at the
level (``numpy.linalg.lstsq``); the result replaces the level's reference energies, recorded
with method ``fit``, the dataset version and the run.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, select

from ..chem.elements import SYMBOLS, symbol_to_z
from ..errors import BadInput
from ..store.levels import get_level
from ..store.runs import run
from ..store.schema import CompositionElement, DatasetMember, Label, ReferenceEnergy, Structure
from .datasets import resolve_dataset


def parse_assignments(text: str) -> dict[int, float]:
    """``"H=-13.6,C=-1029.5"`` -> {1: -13.6, 6: -1029.5}."""
    out: dict[int, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        sym, eq, val = part.partition("=")
        if not eq:
            raise BadInput(f"--set {text!r}: expected SYMBOL=ENERGY pairs, got {part!r}")
        try:
            e = float(val)
        except ValueError:
            raise BadInput(f"--set: energy {val!r} of {sym.strip()} is not a number") from None
        if not np.isfinite(e):
            raise BadInput(f"--set: energy of {sym.strip()} must be finite")
        out[symbol_to_z(sym.strip())] = e
    if not out:
        raise BadInput("--set: no SYMBOL=ENERGY pairs given")
    return out


def set_reference_energies(reg, level: str, energies: dict) -> dict:
    """Set (insert or replace) reference energies of ``level``; keys are Z or symbols."""
    zs = {symbol_to_z(k) if isinstance(k, str) else int(k): float(v)
          for k, v in energies.items()}
    if not zs or not all(np.isfinite(list(zs.values()))):
        raise BadInput("reference energies must be a non-empty map of finite numbers")
    lv = get_level(reg, level)
    with run(reg, "reference_energies", {"level": lv["name"], "method": "set",
                                         "energies": {SYMBOLS[z]: e for z, e in
                                                      zs.items()}}) as rec:
        rec.consumed("level", lv["id"], ref=lv["name"])
        with reg.session() as s:
            for z, e in zs.items():
                row = s.get(ReferenceEnergy, (lv["id"], z))
                if row is None:
                    s.add(ReferenceEnergy(level_id=lv["id"], z=z, energy=e, method="set",
                                          run_id=rec.id))
                else:
                    row.energy, row.method, row.run_id = e, "set", rec.id
                    row.dataset_version_id = None
    return reference_energies(reg, level)


def fit_reference_energies(reg, level: str, ref: str) -> dict:
    """Least-squares fit from the labels the dataset version ``ref`` pins at ``level``."""
    lv = get_level(reg, level)
    dv = resolve_dataset(reg, ref)
    if lv["name"] not in dv["levels"]:
        raise BadInput(f"dataset {dv['ref']} has no labels at {lv['name']!r}; its levels: "
                       f"{', '.join(dv['levels'])}")
    with reg.session() as s:
        rows = s.execute(
            select(Label.structure_id, Label.energy)
            .join(DatasetMember, DatasetMember.label_id == Label.id)
            .where(DatasetMember.version_id == dv["id"], Label.level_id == lv["id"],
                   Label.energy.is_not(None))).all()
        if not rows:
            raise BadInput(f"dataset {dv['ref']} has no energies at {lv['name']!r}")
        sids = np.array([r[0] for r in rows], dtype=np.int64)
        energy = np.array([r[1] for r in rows], dtype=np.float64)
        ce = CompositionElement
        comp = s.execute(
            select(DatasetMember.structure_id, ce.z, ce.count)
            .join(Structure, Structure.id == DatasetMember.structure_id)
            .join(ce, ce.composition_id == Structure.composition_id)
            .join(Label, Label.id == DatasetMember.label_id)
            .where(DatasetMember.version_id == dv["id"], Label.level_id == lv["id"])).all()
    c_sid, c_z, c_n = (np.array(col, dtype=np.int64) for col in zip(*comp, strict=True))
    elements = np.unique(c_z)
    order = np.argsort(sids)
    rows_of = order[np.searchsorted(sids, c_sid, sorter=order)]
    a = np.zeros((len(sids), len(elements)))
    a[rows_of, np.searchsorted(elements, c_z)] = c_n
    coef, *_ = np.linalg.lstsq(a, energy, rcond=None)
    rank = np.linalg.matrix_rank(a)
    resid = energy - a @ coef
    rmse = float(np.sqrt(np.mean(resid ** 2)))
    with run(reg, "reference_energies", {"level": lv["name"], "method": "fit",
                                         "dataset": dv["ref"]}) as rec:
        rec.consumed("level", lv["id"], ref=lv["name"])
        rec.consumed("dataset_version", dv["id"], ref=dv["ref"], sha256=dv["hash"])
        rec.result = {"rmse_eV": rmse, "n": len(sids), "rank": int(rank)}
        with reg.session() as s:
            s.execute(delete(ReferenceEnergy).where(ReferenceEnergy.level_id == lv["id"]))
            s.add_all(ReferenceEnergy(level_id=lv["id"], z=int(z), energy=float(e),
                                      method="fit", dataset_version_id=dv["id"],
                                      run_id=rec.id) for z, e in zip(elements, coef,
                                                                     strict=True))
    out = reference_energies(reg, level)
    out.update(rmse_eV=rmse, n_labels=len(sids), rank_deficient=bool(rank < len(elements)))
    return out


def reference_energies(reg, level: str) -> dict:
    """{"level", "energies": {symbol: eV}, "method": {symbol: set|fit}, ...}."""
    lv = get_level(reg, level)
    with reg.session() as s:
        rows = s.scalars(select(ReferenceEnergy).where(ReferenceEnergy.level_id == lv["id"])
                         .order_by(ReferenceEnergy.z)).all()
        return {"level": lv["name"],
                "energies": {SYMBOLS[r.z]: r.energy for r in rows},
                "method": {SYMBOLS[r.z]: r.method for r in rows},
                "dataset_version_id": {SYMBOLS[r.z]: r.dataset_version_id for r in rows}}
