"""Iteration rows: opened once, then advanced phase by phase.

Phases, in order: ``train`` (the committee is trained), ``sample`` (trajectories run),
``select`` (candidates chosen), ``label`` (reference labels computed), ``ingest`` (labels
stored), ``dataset`` (the extended dataset version made), ``done``. Every phase's results
are written before the phase moves on, so a resumed campaign redoes at most the phase it was
killed in, and only the parts of it not yet recorded.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..store.lookups import dataset_version_ref
from ..store.schema import ALIteration, Model, ModelVersion, utcnow

PHASES = ("train", "sample", "select", "label", "ingest", "dataset", "done")
# Columns a phase may set through update_iteration.
FIELDS = {"phase", "train_run_id", "model_version_id", "threshold", "fraction_above",
          "ingest_run_id", "new_dataset_version_id", "metrics", "finished_at"}


def model_version_ref(s, mv_id: int | None) -> str | None:
    if mv_id is None:
        return None
    row = s.execute(select(Model.name, ModelVersion.version)
                    .join(ModelVersion, ModelVersion.model_id == Model.id)
                    .where(ModelVersion.id == mv_id)).first()
    return f"{row[0]}:{row[1]}" if row else None


def iteration_dict(s, it: ALIteration) -> dict:
    ds = dataset_version_ref(s, it.dataset_version_id)
    new = dataset_version_ref(s, it.new_dataset_version_id)
    return {"id": it.id, "campaign_id": it.campaign_id, "iteration": it.iteration,
            "phase": it.phase, "dataset_version": ds["ref"] if ds else None,
            "dataset_version_id": it.dataset_version_id, "train_run_id": it.train_run_id,
            "model_version": model_version_ref(s, it.model_version_id),
            "model_version_id": it.model_version_id, "threshold": it.threshold,
            "fraction_above": it.fraction_above, "ingest_run_id": it.ingest_run_id,
            "new_dataset_version": new["ref"] if new else None,
            "new_dataset_version_id": it.new_dataset_version_id, "metrics": it.metrics,
            "seconds": dict(it.seconds or {}), "started_at": it.started_at,
            "finished_at": it.finished_at}


def current_iteration(reg, campaign_id: int) -> dict | None:
    """The campaign's newest iteration, or None before the first."""
    with reg.session() as s:
        it = s.scalar(select(ALIteration).where(ALIteration.campaign_id == campaign_id)
                      .order_by(ALIteration.iteration.desc()).limit(1))
        return None if it is None else iteration_dict(s, it)


def list_iterations(reg, campaign_id: int) -> list[dict]:
    with reg.session() as s:
        rows = s.scalars(select(ALIteration).where(ALIteration.campaign_id == campaign_id)
                         .order_by(ALIteration.iteration))
        return [iteration_dict(s, it) for it in rows]


def open_iteration(reg, campaign_id: int, iteration: int, dataset_version_id: int) -> dict:
    """Iteration ``iteration`` of the campaign, created (phase ``train``) if missing."""
    for _ in range(2):
        try:
            with reg.session() as s:
                it = s.scalar(select(ALIteration).where(
                    ALIteration.campaign_id == campaign_id,
                    ALIteration.iteration == iteration))
                if it is None:
                    it = ALIteration(campaign_id=campaign_id, iteration=iteration,
                                     phase="train", dataset_version_id=dataset_version_id,
                                     seconds={}, started_at=utcnow())
                    s.add(it)
                    s.flush()
                return iteration_dict(s, it)
        except IntegrityError:  # opened concurrently: read it on the next pass
            continue
    raise AssertionError("unreachable")


def update_iteration(reg, iteration_id: int, *, seconds: dict | None = None,
                     **fields) -> dict:
    """Set ``fields`` (see :data:`FIELDS`) and add ``seconds`` (phase: wall time) to the
    iteration's timings, in one transaction."""
    unknown = set(fields) - FIELDS
    if unknown:
        raise ValueError(f"not iteration fields: {sorted(unknown)}")
    if "phase" in fields and fields["phase"] not in PHASES:
        raise ValueError(f"unknown phase {fields['phase']!r}")
    with reg.session() as s:
        it = s.get(ALIteration, iteration_id)
        for k, v in fields.items():
            setattr(it, k, v)
        if seconds:
            merged = dict(it.seconds or {})
            for k, v in seconds.items():
                merged[k] = round(float(merged.get(k, 0.0)) + float(v), 3)
            it.seconds = merged
        s.flush()
        return iteration_dict(s, it)


def count_iterations(reg, campaign_id: int) -> int:
    with reg.session() as s:
        return int(s.scalar(select(func.count()).select_from(ALIteration)
                            .where(ALIteration.campaign_id == campaign_id)))


def labelled_in_iterations(reg, dataset_version_id: int) -> dict[int, int] | None:
    """``{structure_id: AL iteration that labelled it}`` for a dataset version an active-
    learning iteration made (its ``new_dataset_version``), over that iteration and the
    campaign's earlier ones; None when no campaign made the version."""
    from ..store.schema import ALCandidate

    with reg.session() as s:
        made = s.execute(select(ALIteration.campaign_id, ALIteration.iteration)
                         .where(ALIteration.new_dataset_version_id == dataset_version_id)
                         .order_by(ALIteration.iteration)).first()
        if made is None:
            return None
        rows = s.execute(
            select(ALCandidate.structure_id, func.min(ALIteration.iteration))
            .join(ALIteration, ALIteration.id == ALCandidate.iteration_id)
            .where(ALIteration.campaign_id == made[0], ALIteration.iteration <= made[1],
                   ALCandidate.label_status == "ok", ALCandidate.structure_id.is_not(None))
            .group_by(ALCandidate.structure_id)).all()
    return {int(sid): int(k) for sid, k in rows}
