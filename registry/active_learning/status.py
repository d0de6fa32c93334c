"""The report of ``nnp al status``: a campaign, its iterations and their counts."""

from __future__ import annotations

from .campaigns import get_campaign
from .candidates import failed_labels, iteration_counts, trajectories
from .iterations import list_iterations

MAX_LISTED = 20  # failed labels and early MD stops listed per iteration


def campaign_status(reg, name: str) -> dict:
    """The campaign's state, settings and stop reason, and per iteration: candidates,
    selected, labeled, failed, threshold, fraction above it, rho summary, the dataset and
    model versions, the model's validation and test metrics, trajectories stopped early,
    failed labels and wall time per phase. ``labels_total`` counts ok labels,
    ``labels_attempted`` every reference calculation (what the budget limits)."""
    c = get_campaign(reg, name)
    its = list_iterations(reg, c["id"])
    counts = iteration_counts(reg, [it["id"] for it in its])
    out = []
    for it in its:
        n = counts[it["id"]]
        trajs = trajectories(reg, it["id"])
        metrics = it["metrics"] or {}
        out.append({
            "iteration": it["iteration"], "phase": it["phase"],
            **{k: n[k] for k in ("n_candidates", "n_selected", "n_labeled", "n_failed",
                                 "n_pending")},
            "threshold": it["threshold"], "fraction_above": it["fraction_above"],
            "rho": n["rho"], "dataset_version": it["dataset_version"],
            "model_version": it["model_version"], "train_run_id": it["train_run_id"],
            "new_dataset_version": it["new_dataset_version"],
            "ingest_run_id": it["ingest_run_id"],
            "metrics": {k: metrics.get(k) for k in ("train", "val", "test")},
            "trajectories": len(trajs),
            "md_stops": [{k: t[k] for k in ("trajectory", "seed", "temperature",
                                            "steps_done", "stop_reason")}
                         for t in trajs if t["stop_reason"]][:MAX_LISTED],
            "n_md_stops": sum(1 for t in trajs if t["stop_reason"]),
            "failed_labels": failed_labels(reg, it["id"])[:MAX_LISTED],
            "seconds": it["seconds"], "started_at": it["started_at"],
            "finished_at": it["finished_at"], "diversity": None})
    return {"name": c["name"], "state": c["state"], "stop_reason": c["stop_reason"],
            "error": c["error"], "labeler": c["labeler"], "level": c["level"],
            "dataset": c["dataset"]["ref"] if c["dataset"] else None,
            "settings": c["settings"], "n_seeds": len(c["seeds"]), "run_id": c["run_id"],
            "labels_total": sum(counts[it["id"]]["n_labeled"] for it in its),
            "labels_failed": sum(counts[it["id"]]["n_failed"] for it in its),
            "labels_attempted": sum(counts[it["id"]]["n_labeled"] + counts[it["id"]]["n_failed"]
                                    for it in its),
            "iterations": out, "created_at": c["created_at"], "updated_at": c["updated_at"]}
