"""Reference labels of selected candidates: one Dask task per candidate.

A task opens the registry from the URL, reads the candidate's geometry, labels it with
:func:`pipelines.labeling.get_labeler` and records the result on the candidate row (``ok``
with energy and forces, or ``failed`` with the labeler's message: an SCF that did not
converge is a failed label, not a crashed campaign). A candidate that is no longer
``pending`` (labeled before a kill) is left alone, so a resumed campaign never repeats a
finished label.
"""

from __future__ import annotations

import time


def candidate_atoms(g: dict):
    """``ase.Atoms`` of a candidate geometry (charge and multiplicity in ``info``)."""
    from ase import Atoms

    atoms = Atoms(numbers=g["numbers"], positions=g["positions"],
                  cell=g["cell"] if g["cell"] is not None else None, pbc=g["pbc"])
    atoms.info.update(charge=int(g["charge"]), multiplicity=int(g["multiplicity"]))
    return atoms


def label_task(url: str, candidate_id: int, spec: str) -> dict:
    """Label candidate ``candidate_id`` with labeler ``spec``; returns ``{"candidate",
    "status", "message", "seconds", "written", "db_seconds"}``."""
    from registry.active_learning.candidates import candidate_geometry, record_label
    from registry.core import Registry

    from ..labeling import LabelFailure, get_labeler

    with Registry(url) as reg:
        t0 = time.perf_counter()
        g = candidate_geometry(reg, candidate_id)
        db = time.perf_counter() - t0  # bookkeeping: the candidate's row read and written
        if g["label_status"] != "pending":
            return {"candidate": candidate_id, "status": g["label_status"], "message": None,
                    "seconds": 0.0, "written": False, "db_seconds": db}
        t0 = time.perf_counter()
        try:
            out = get_labeler(spec).label(candidate_atoms(g))
            energy, forces, message = out["energy"], out.get("forces"), None
        except LabelFailure as exc:
            energy, forces, message = None, None, str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001  (any labeler error is this label's failure)
            energy, forces = None, None
            message = f"{spec}: {type(exc).__name__}: {exc}".rstrip(": ")
        seconds = round(time.perf_counter() - t0, 4)
        t1 = time.perf_counter()
        written = record_label(reg, candidate_id, energy=energy, forces=forces,
                               message=message, seconds=seconds)
        db += time.perf_counter() - t1
    return {"candidate": candidate_id, "status": "ok" if energy is not None else "failed",
            "message": message, "seconds": seconds, "written": written, "db_seconds": db}
