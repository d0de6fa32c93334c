"""Sampled frames of an iteration: trajectories, candidates, selection, labels, ingest.

Each write is one transaction and each is guarded so that doing it twice changes nothing: a
trajectory's frames are written with its row (a second write of the same trajectory is
refused by its unique key), a label is recorded only on a ``pending`` candidate, a selection
only while the iteration is in its ``select`` phase. Geometry is packed like ``structures``
(:mod:`registry.chem.arrays`); ``hash`` is the structure identity hash, so a candidate is
matched to the structure its label created and deduplicated against labeled structures.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..chem.arrays import U1, pack, unpack, unpack_numbers
from ..chem.frames import FrameBatch, LabelColumns
from ..chem.identity import structure_hashes
from ..store.schema import (
    ALCandidate,
    ALIteration,
    ALTrajectory,
    Label,
    Structure,
    utcnow,
)
from .iterations import PHASES

_CHUNK = 500  # values per IN (...) list
TRAJECTORY_FIELDS = ("trajectory", "seed", "seed_structure_id", "temperature", "md_seed",
                     "sampler", "steps", "steps_done", "stop_reason", "seconds")


def pbc_bits(pbc) -> int:
    return int(sum(b for b, p in zip((1, 2, 4), pbc, strict=True) if p))


def frame_hashes(frames: list[dict]) -> list[str]:
    """Identity hashes of frames (dicts with numbers, positions, cell, pbc, charge,
    multiplicity), as ingest computes them."""
    if not frames:
        return []
    counts = [len(f["numbers"]) for f in frames]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cells = np.stack([np.zeros((3, 3)) if f.get("cell") is None
                      else np.asarray(f["cell"], dtype=np.float64) for f in frames])
    hashes, _ = structure_hashes(
        np.concatenate([np.asarray(f["numbers"], dtype=np.int64) for f in frames]),
        np.concatenate([np.asarray(f["positions"], dtype=np.float64) for f in frames]),
        offsets, cells, np.array([np.asarray(f["pbc"], dtype=bool) for f in frames]),
        np.array([int(f.get("charge", 0)) for f in frames], dtype=np.int64),
        np.array([int(f.get("multiplicity", 1)) for f in frames], dtype=np.int64))
    return hashes


def write_trajectory(reg, iteration_id: int, trajectory: dict, frames: list[dict]) -> bool:
    """The trajectory's row and one candidate per frame, in one transaction. ``frames``:
    dicts with numbers, positions (Å), cell (or None), pbc, charge, multiplicity, step,
    temperature, energy, energy_std and rho. False (nothing written) if the trajectory was
    written before."""
    t = {k: trajectory.get(k) for k in TRAJECTORY_FIELDS}
    hashes = frame_hashes(frames)
    rows = [{"iteration_id": iteration_id, "trajectory": t["trajectory"],
             "step": int(f["step"]), "temperature": float(f["temperature"]),
             "seed": t["seed"], "hash": h, "n_atoms": len(f["numbers"]),
             "numbers": pack(f["numbers"], U1), "positions": pack(f["positions"]),
             "cell": None if f.get("cell") is None else pack(f["cell"]),
             "pbc": pbc_bits(f["pbc"]), "charge": int(f.get("charge", 0)),
             "multiplicity": int(f.get("multiplicity", 1)),
             "rho": _float(f.get("rho")), "energy": _float(f.get("energy")),
             "energy_std": _float(f.get("energy_std")), "selected": False}
            for f, h in zip(frames, hashes, strict=True)]
    try:
        with reg.session() as s:
            s.add(ALTrajectory(iteration_id=iteration_id, n_frames=len(frames), **t))
            s.flush()
            if rows:
                s.execute(insert(ALCandidate), rows)
    except IntegrityError:
        with reg.session() as s:
            if s.scalar(select(ALTrajectory.id).where(
                    ALTrajectory.iteration_id == iteration_id,
                    ALTrajectory.trajectory == t["trajectory"])) is not None:
                return False
        raise
    return True


def _float(v):
    return None if v is None or not np.isfinite(v) else float(v)


def trajectories(reg, iteration_id: int) -> list[dict]:
    """The iteration's trajectory rows, by index."""
    with reg.session() as s:
        rows = s.scalars(select(ALTrajectory).where(ALTrajectory.iteration_id == iteration_id)
                         .order_by(ALTrajectory.trajectory)).all()
        return [{k: getattr(r, k) for k in (*TRAJECTORY_FIELDS, "n_frames")} for r in rows]


def candidate_table(reg, iteration_id: int) -> dict:
    """Columns of the iteration's candidates (id order): id, trajectory, step, rho (NaN when
    unknown), hash, selected, label_status."""
    with reg.session() as s:
        rows = s.execute(select(ALCandidate.id, ALCandidate.trajectory, ALCandidate.step,
                                ALCandidate.rho, ALCandidate.hash, ALCandidate.selected,
                                ALCandidate.label_status)
                         .where(ALCandidate.iteration_id == iteration_id)
                         .order_by(ALCandidate.id)).all()
    return {"id": np.array([r[0] for r in rows], dtype=np.int64),
            "trajectory": np.array([r[1] for r in rows], dtype=np.int64),
            "step": np.array([r[2] for r in rows], dtype=np.int64),
            "rho": np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=float),
            "hash": [r[4] for r in rows],
            "selected": np.array([bool(r[5]) for r in rows], dtype=bool),
            "label_status": [r[6] for r in rows]}


def hashes_labeled_at(reg, hashes, level_id: int) -> set[str]:
    """The structure hashes among ``hashes`` that have an ``ok`` label at the level."""
    wanted = sorted(set(hashes))
    out: set[str] = set()
    with reg.session() as s:
        for i in range(0, len(wanted), _CHUNK):
            out.update(s.scalars(
                select(Structure.hash).join(Label, and_(Label.structure_id == Structure.id,
                                                        Label.level_id == level_id,
                                                        Label.status == "ok"))
                .where(Structure.hash.in_(wanted[i: i + _CHUNK]))))
    return out


def mark_selected(reg, iteration_id: int, ids, threshold: float | None,
                  fraction_above: float | None) -> bool:
    """Record the selection (``ids`` become ``pending`` labels), the threshold on every
    candidate and the iteration's fraction above it; the iteration moves to ``label`` (to
    ``done`` when nothing was selected). False if it was recorded before."""
    ids = [int(i) for i in ids]
    with reg.session() as s:
        it = s.scalar(select(ALIteration).where(ALIteration.id == iteration_id)
                      .with_for_update())
        if PHASES.index(it.phase) > PHASES.index("select"):
            return False
        s.execute(update(ALCandidate).where(ALCandidate.iteration_id == iteration_id)
                  .values(threshold=threshold))
        for i in range(0, len(ids), _CHUNK):
            s.execute(update(ALCandidate).where(ALCandidate.iteration_id == iteration_id,
                                                ALCandidate.id.in_(ids[i: i + _CHUNK]))
                      .values(selected=True, label_status="pending"))
        it.threshold, it.fraction_above = threshold, fraction_above
        it.phase = "label" if ids else "done"
        if not ids:
            it.finished_at = utcnow()
    return True


def pending_candidates(reg, iteration_id: int) -> list[int]:
    with reg.session() as s:
        return list(s.scalars(select(ALCandidate.id).where(
            ALCandidate.iteration_id == iteration_id, ALCandidate.label_status == "pending")
            .order_by(ALCandidate.id)))


def candidate_geometry(reg, candidate_id: int) -> dict:
    """numbers, positions (Å), cell (or None), pbc, charge, multiplicity and label_status."""
    with reg.session() as s:
        c = s.get(ALCandidate, candidate_id)
        return {"id": c.id, "numbers": unpack_numbers(c.numbers),
                "positions": unpack(c.positions, (-1, 3)).copy(),
                "cell": None if c.cell is None else unpack(c.cell, (3, 3)).copy(),
                "pbc": [bool(c.pbc & b) for b in (1, 2, 4)], "charge": c.charge,
                "multiplicity": c.multiplicity, "label_status": c.label_status}


def record_label(reg, candidate_id: int, *, energy: float | None = None, forces=None,
                 message: str | None = None, seconds: float | None = None) -> bool:
    """The candidate's label: ``ok`` with energy (eV) and forces (eV/Å, or None), or
    ``failed`` with ``message`` when ``energy`` is None. Written only while the candidate is
    ``pending``; returns whether it was."""
    ok = energy is not None
    values = {"label_status": "ok" if ok else "failed", "label_message": message,
              "label_energy": float(energy) if ok else None,
              "label_forces": pack(forces) if ok and forces is not None else None,
              "label_seconds": seconds, "labeled_at": utcnow()}
    with reg.session() as s:
        n = s.execute(update(ALCandidate).where(ALCandidate.id == candidate_id,
                                                ALCandidate.label_status == "pending")
                      .values(**values)).rowcount
    return bool(n)


def ok_labels(reg, iteration_id: int, level: str, source: str) -> tuple[FrameBatch, list]:
    """The iteration's ``ok`` labels as a :class:`FrameBatch` at ``level`` (candidate order)
    and the candidate ids; each frame's info names the candidate."""
    with reg.session() as s:
        rows = s.scalars(select(ALCandidate).where(ALCandidate.iteration_id == iteration_id,
                                                   ALCandidate.label_status == "ok")
                         .order_by(ALCandidate.id)).all()
    if not rows:
        return None, []
    numbers = [unpack_numbers(r.numbers) for r in rows]
    offsets = np.concatenate([[0], np.cumsum([len(z) for z in numbers])]).astype(np.int64)
    n = int(offsets[-1])
    has_f = np.array([r.label_forces is not None for r in rows])
    forces = None
    if has_f.any():
        forces = np.full((n, 3), np.nan)
        for i, r in enumerate(rows):
            if r.label_forces is not None:
                forces[offsets[i]: offsets[i + 1]] = unpack(r.label_forces, (-1, 3))
    cols = LabelColumns(present=np.ones(len(rows), dtype=bool),
                        energy=np.array([r.label_energy for r in rows], dtype=np.float64),
                        forces=forces)
    if forces is not None and not has_f.all():
        cols.masks["forces"] = has_f
    batch = FrameBatch(
        numbers=np.concatenate(numbers),
        positions=np.concatenate([unpack(r.positions, (-1, 3)) for r in rows]),
        offsets=offsets,
        cells=np.stack([np.zeros((3, 3)) if r.cell is None else unpack(r.cell, (3, 3))
                        for r in rows]).astype(np.float64),
        pbc=np.array([[bool(r.pbc & b) for b in (1, 2, 4)] for r in rows], dtype=bool),
        charge=np.array([r.charge for r in rows], dtype=np.int64),
        multiplicity=np.array([r.multiplicity for r in rows], dtype=np.int64),
        labels={level: cols}, sources=[source] * len(rows),
        infos=[{"al_candidate": r.id, "al_rho": r.rho, "md_temperature_k": r.temperature,
                "md_step": r.step} for r in rows],
        frame_names=[f"candidate {r.id}" for r in rows])
    return batch, [r.id for r in rows]


def link_ingested(reg, iteration_id: int, level_id: int, ingest_run_id: int | None) -> list:
    """Point the iteration's ``ok`` candidates at their stored structure and ``ok`` label at
    the level, record the ingest run and move the iteration to ``dataset``; returns the
    label ids (one transaction)."""
    with reg.session() as s:
        rows = s.execute(select(ALCandidate.id, ALCandidate.hash).where(
            ALCandidate.iteration_id == iteration_id, ALCandidate.label_status == "ok")).all()
        hashes = sorted({h for _, h in rows})
        found: dict[str, tuple[int, int]] = {}
        for i in range(0, len(hashes), _CHUNK):
            found.update({h: (sid, lid) for h, sid, lid in s.execute(
                select(Structure.hash, Structure.id, Label.id)
                .join(Label, and_(Label.structure_id == Structure.id,
                                  Label.level_id == level_id, Label.status == "ok"))
                .where(Structure.hash.in_(hashes[i: i + _CHUNK])))})
        missing = [cid for cid, h in rows if h not in found]
        if missing:
            raise RuntimeError(f"candidates {missing[:10]} have no stored ok label after "
                               f"ingest")
        for cid, h in rows:
            sid, lid = found[h]
            s.execute(update(ALCandidate).where(ALCandidate.id == cid)
                      .values(structure_id=sid, label_id=lid))
        it = s.get(ALIteration, iteration_id)
        it.ingest_run_id, it.phase = ingest_run_id, "dataset"
        return sorted({found[h][1] for _, h in rows})


def iteration_counts(reg, iteration_ids) -> dict[int, dict]:
    """Per iteration: n_candidates, n_selected, n_labeled (ok), n_failed, n_pending and the
    rho summary (mean, median, max over the candidates)."""
    ids = [int(i) for i in iteration_ids]
    out = {i: {"n_candidates": 0, "n_selected": 0, "n_labeled": 0, "n_failed": 0,
               "n_pending": 0} for i in ids}
    if not ids:
        return out
    c = ALCandidate
    with reg.session() as s:
        for it, n, sel in s.execute(select(c.iteration_id, func.count(),
                                           func.sum(case((c.selected.is_(True), 1), else_=0)))
                                    .where(c.iteration_id.in_(ids))
                                    .group_by(c.iteration_id)):
            out[it].update(n_candidates=int(n), n_selected=int(sel or 0))
        for it, st, n in s.execute(select(c.iteration_id, c.label_status, func.count())
                                   .where(c.iteration_id.in_(ids),
                                          c.label_status.is_not(None))
                                   .group_by(c.iteration_id, c.label_status)):
            key = {"ok": "n_labeled", "failed": "n_failed", "pending": "n_pending"}[st]
            out[it][key] = int(n)
        rhos: dict[int, list] = {i: [] for i in ids}
        for it, rho in s.execute(select(c.iteration_id, c.rho)
                                 .where(c.iteration_id.in_(ids), c.rho.is_not(None))):
            rhos[it].append(rho)
    for i in ids:
        r = np.asarray(rhos[i], dtype=float)
        out[i]["rho"] = None if not len(r) else {
            "mean": float(r.mean()), "median": float(np.median(r)),
            "p90": float(np.percentile(r, 90)), "max": float(r.max())}
    return out


def failed_labels(reg, iteration_id: int) -> list[dict]:
    """The iteration's failed labels: candidate id, trajectory, step and message."""
    with reg.session() as s:
        return [{"candidate": i, "trajectory": t, "step": st, "message": m}
                for i, t, st, m in s.execute(
                    select(ALCandidate.id, ALCandidate.trajectory, ALCandidate.step,
                           ALCandidate.label_message)
                    .where(ALCandidate.iteration_id == iteration_id,
                           ALCandidate.label_status == "failed")
                    .order_by(ALCandidate.id))]


def rho_values(reg, iteration_id: int) -> dict:
    """rho of every candidate of the iteration and of the selected ones (for plots)."""
    with reg.session() as s:
        rows = s.execute(select(ALCandidate.rho, ALCandidate.selected).where(
            ALCandidate.iteration_id == iteration_id, ALCandidate.rho.is_not(None))).all()
    return {"all": [r for r, _ in rows], "selected": [r for r, sel in rows if sel]}


def ingested_label_ids(reg, iteration_id: int) -> list[int]:
    """The stored label ids of the iteration's ``ok`` candidates (after :func:`link_ingested`)."""
    with reg.session() as s:
        return sorted(set(s.scalars(select(ALCandidate.label_id).where(
            ALCandidate.iteration_id == iteration_id, ALCandidate.label_status == "ok",
            ALCandidate.label_id.is_not(None)))))
