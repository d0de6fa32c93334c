"""One iteration, phase by phase; every phase starts from what the database says is done.

train → sample → select → label → ingest → dataset → done (the phases of
:mod:`registry.active_learning.iterations`). Training, sampling and labeling fan out on Dask
(one task per ensemble member, trajectory and label); the sampling and labeling tasks open
their own registry connection from the URL and record their own results, so whatever a
killed process finished stays finished:

- train: the ensemble (``ensemble.train``; warm-started from the previous iteration's model
  with ``--from``), its run id recorded as soon as it starts; a killed training run is
  continued from its checkpoints (``ensemble.resume``), a finished one is not repeated;
- sample: only trajectories without a row are run;
- select / ingest / dataset: one guarded transaction each, or idempotent (ingest
  deduplicates; an identical dataset version is found, not made twice);
- label: only candidates still ``pending`` are labeled.

``seconds`` per phase and ``bookkeeping`` (time spent reading and writing the campaign's own
tables, in the driver and the tasks) are added to the iteration row.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from registry.active_learning import candidates as cands
from registry.active_learning.iterations import update_iteration


class Clock:
    """Wall time of the campaign's own bookkeeping (reads and writes of its tables)."""

    def __init__(self):
        self.seconds = 0.0

    @contextmanager
    def __call__(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0

    def take(self) -> float:
        out, self.seconds = self.seconds, 0.0
        return out


def md_seed(seed: int, iteration: int, trajectory: int) -> int:
    """The velocities' and thermostat's seed of a trajectory (differs per iteration)."""
    return int(np.random.SeedSequence([seed, iteration, trajectory]).generate_state(1)[0])


def trajectory_specs(campaign: dict, s, iteration: int) -> list[dict]:
    """What each sampling task runs: one per (seed, temperature), or per group (pool)."""
    seeds = campaign["seeds"]
    if s.sampler == "pool":
        groups: dict[int, list] = {}
        for i, sid in enumerate(seeds):
            g = s.groups[i] if s.groups else i
            groups.setdefault(g, []).append((i, sid))
        return [{"trajectory": t, "seed": members[0][0], "seed_structure_id": members[0][1],
                 "temperature": 0.0, "md_seed": 0, "sampler": "pool", "members": members}
                for t, (_, members) in enumerate(sorted(groups.items()))]
    temps = s.temperatures
    return [{"trajectory": i * len(temps) + j, "seed": i, "seed_structure_id": sid,
             "temperature": float(t), "md_seed": md_seed(s.seed, iteration, i * len(temps) + j),
             "sampler": s.sampler}
            for i, sid in enumerate(seeds) for j, t in enumerate(temps)]


def _gather(client, futures, emit, event: str, iteration: int):
    """Results of ``futures`` as they complete, with a progress event each."""
    from dask.distributed import as_completed

    out = []
    total = len(futures)
    try:
        for k, fut in enumerate(as_completed(futures), start=1):
            res = fut.result()
            out.append(res)
            emit({"event": event, "iteration": iteration, "done": k, "total": total, **res})
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return out


def phase_train(reg, campaign: dict, s, it: dict, previous: dict | None, client, emit,
                clock: Clock) -> dict:
    """The committee of this iteration (see the module docstring)."""
    from pipelines.training import ensemble

    t0 = time.perf_counter()
    k = it["iteration"]

    def on_event(ev: dict) -> None:
        if ev.get("event") == "start":  # recorded at once: a kill from here on resumes it
            with clock():
                update_iteration(reg, it["id"], train_run_id=ev["run_id"])
        emit({**ev, "iteration": k, "train_event": ev["event"], "event": "train"})

    if previous is not None and previous["dataset_version_id"] == it["dataset_version_id"] \
            and previous["model_version_id"] is not None:
        # no new labels since: the same data would train the same committee
        mv_id, ref = previous["model_version_id"], previous["model_version"]
        metrics = previous["metrics"]
    elif it["train_run_id"] is not None and reg.get_run(it["train_run_id"])["status"] == "ok":
        run = reg.get_run(it["train_run_id"])
        mv_id = next(e["entity_id"] for e in run["outputs"]
                     if e["entity_type"] == "model_version")
        info = reg.show_model(mv_id)
        ref, metrics = info["ref"], info["metrics"]
    else:
        if it["train_run_id"] is not None:
            out = ensemble.resume(reg, it["train_run_id"], client=client, on_event=on_event,
                                  description=f"active learning {campaign['name']} "
                                              f"iteration {k}")
        else:
            warm = s.warm_start and previous is not None
            out = ensemble.train(
                reg, it["dataset_version"], arch="ani", ensemble=s.ensemble,
                epochs=s.warm_epochs if warm and s.warm_epochs else s.epochs,
                patience=s.patience, config=dict(s.train_config), seed=s.seed,
                name=campaign["name"], device=s.device,
                parent=previous["model_version"] if warm else None, client=client,
                on_event=on_event, verify=False,
                description=f"active learning {campaign['name']} iteration {k}")
        mv_id, ref, metrics = out["version"]["id"], out["model"], out["metrics"]
    with clock():
        it = update_iteration(reg, it["id"], model_version_id=mv_id, phase="sample",
                              metrics={key: metrics.get(key) for key in ("train", "val", "test")},
                              seconds={"train": time.perf_counter() - t0})
    emit({"event": "trained", "iteration": k, "model": ref, "metrics": it["metrics"]})
    return it


def phase_sample(reg, campaign: dict, s, it: dict, client, emit, clock: Clock) -> dict:
    from .sampling import sample_task

    t0 = time.perf_counter()
    k = it["iteration"]
    with clock():
        done = {t["trajectory"] for t in cands.trajectories(reg, it["id"])}
    specs = [sp for sp in trajectory_specs(campaign, s, k) if sp["trajectory"] not in done]
    # MD / NMS: a task per trajectory; pool groups are cheap: a few tasks of several, so
    # the committee is pulled a few times, not once per group
    n = len(specs) if s.sampler != "pool" else min(len(specs), 2 * n_workers(client))
    chunks = [specs[i::n] for i in range(n)] if specs else []
    emit({"event": "sampling", "iteration": k, "total": len(chunks),
          "trajectories": len(specs), "done_before": len(done)})
    futures = [client.submit(sample_task, reg.url, it["id"], chunk, it["model_version"],
                             s.to_dict(), pure=False) for chunk in chunks]
    results = _gather(client, futures, emit, "sampled", k)
    task_db = sum(r["db_seconds"] for r in results)
    with clock():
        it = update_iteration(reg, it["id"], phase="select",
                              seconds={"sample": time.perf_counter() - t0,
                                       "bookkeeping": task_db})
    return it


def n_workers(client) -> int:
    try:
        return max(1, len(client.scheduler_info()["workers"]))
    except Exception:  # noqa: BLE001  (a client that cannot say: assume one)
        return 1


def phase_select(reg, campaign: dict, s, it: dict, emit, clock: Clock,
                 attempted: int) -> dict:
    from .selection import select

    t0 = time.perf_counter()
    k = it["iteration"]
    m = s.per_iteration if s.budget is None else max(0, min(s.per_iteration,
                                                            s.budget - attempted))
    with clock():
        table = cands.candidate_table(reg, it["id"])
        labeled = cands.hashes_labeled_at(reg, table["hash"], campaign["level_id"])
    sel = select(table, threshold=s.threshold, m=m, method=s.selection,
                 exclude_hashes=labeled, separation=s.interval if s.sampler == "md" else 0,
                 seed=[s.seed, k])
    with clock():
        cands.mark_selected(reg, it["id"], sel["ids"], s.threshold, sel["fraction_above"])
        it = update_iteration(reg, it["id"], seconds={"select": time.perf_counter() - t0})
    emit({"event": "selected", "iteration": k, "n_candidates": len(table["id"]),
          "n_selected": len(sel["ids"]), "n_above": sel["n_above"],
          "fraction_above": sel["fraction_above"], "threshold": s.threshold})
    return it


def phase_label(reg, campaign: dict, it: dict, client, emit, clock: Clock) -> dict:
    from .labeling import label_task

    t0 = time.perf_counter()
    k = it["iteration"]
    with clock():
        pending = cands.pending_candidates(reg, it["id"])
    emit({"event": "labeling", "iteration": k, "total": len(pending),
          "labeler": campaign["labeler"]})
    futures = [client.submit(label_task, reg.url, cid, campaign["labeler"], pure=False)
               for cid in pending]
    results = _gather(client, futures, emit, "labeled", k)
    with clock():
        left = cands.pending_candidates(reg, it["id"])
    if left:
        raise RuntimeError(f"candidates {left[:10]} are still pending after labeling")
    task_db = sum(r["db_seconds"] for r in results)
    with clock():
        it = update_iteration(reg, it["id"], phase="ingest",
                              seconds={"label": time.perf_counter() - t0,
                                       "bookkeeping": task_db})
    return it


def phase_ingest(reg, campaign: dict, it: dict, emit, clock: Clock) -> dict:
    from registry.store.runs import edge

    t0 = time.perf_counter()
    k = it["iteration"]
    source = f"al {campaign['name']} iteration {k}"
    with clock():
        batch, ids = cands.ok_labels(reg, it["id"], campaign["level"], source)
    run_id = None
    if batch is not None:
        summary = reg.ingest_batch(
            batch, params={"level": campaign["level"], "source": source,
                           "campaign": campaign["name"], "iteration": k,
                           "labeler": campaign["labeler"], "candidates": len(ids)},
            inputs=[edge("model_version", it["model_version_id"], ref=it["model_version"],
                         role="committee"),
                    edge("dataset_version", it["dataset_version_id"],
                         ref=it["dataset_version"], role="trained on")])
        run_id = summary.run_id
    with clock():
        cands.link_ingested(reg, it["id"], campaign["level_id"], run_id)
        it = update_iteration(reg, it["id"], seconds={"ingest": time.perf_counter() - t0})
    emit({"event": "ingested", "iteration": k, "labels": len(ids), "run_id": run_id})
    return it


def phase_dataset(reg, campaign: dict, it: dict, emit, clock: Clock) -> dict:
    from registry.curation.extend import extend_dataset_version
    from registry.store.schema import utcnow

    t0 = time.perf_counter()
    k = it["iteration"]
    with clock():
        labels = cands.ingested_label_ids(reg, it["id"])
    new_id, ref = None, None
    if labels:
        v = extend_dataset_version(
            reg, it["dataset_version"], campaign["name"], labels, allow_empty=True,
            note=f"active learning {campaign['name']} iteration {k}: "
                 f"{it['dataset_version']} + {len(labels)} labels",
            params={"campaign": campaign["name"], "iteration": k})
        if v["added"]:
            new_id, ref = v["id"], v["ref"]
    with clock():
        it = update_iteration(reg, it["id"], new_dataset_version_id=new_id, phase="done",
                              finished_at=utcnow(),
                              seconds={"dataset": time.perf_counter() - t0})
    emit({"event": "dataset", "iteration": k, "dataset": ref, "added": len(labels)})
    return it
