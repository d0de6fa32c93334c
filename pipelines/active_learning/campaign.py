"""``nnp al start`` / ``nnp al resume``: a campaign checked, created, and run to its end.

:func:`start` checks everything before any write (name, settings, labeler, dataset version
and its level, seeds file and its elements, the training config against the data); a
refusal is a :class:`BadInput` (or ``NotFound``/``Conflict``) and nothing is written. It then
creates the labeler's level, stores the seeds as structures, creates the campaign row and
runs it. :func:`resume` takes over a stopped or failed campaign.

:func:`run_campaign` works inside one ``active_learning`` run in provenance (the campaign
points at it, so a killed process shows as ``stopped``), iterating until a stop condition:
the iteration count, the label budget, the fraction of sampled frames above the threshold
falling below ``stop_fraction``, or an iteration that selected nothing. Names: the campaign's
dataset versions are versions of the dataset NAME, its committees versions of the model NAME.
"""

from __future__ import annotations

from contextlib import nullcontext

from registry.active_learning import campaigns as store
from registry.active_learning.iterations import (
    current_iteration,
    list_iterations,
    open_iteration,
    update_iteration,
)
from registry.errors import BadInput

from . import iteration as phases
from .settings import Settings


def registry_of(reg_url):
    """An open registry for a URL (closed on exit), or the registry given, as is."""
    from registry.core import Registry

    return Registry(reg_url) if isinstance(reg_url, str) else nullcontext(reg_url)


def prepare(reg, name: str, dataset: str, labeler: str, seeds, settings: Settings) -> dict:
    """Check a new campaign (see the module docstring); writes nothing."""
    from registry.store.refs import check_name

    from ..labeling import get_labeler
    from ..training.ensemble import prepare as prepare_training
    from .seeds import check_elements, read_seeds

    check_name(name, "campaign name")
    if store.campaign_exists(reg, name):
        from registry.errors import Conflict

        raise Conflict(f"campaign {name!r} exists; continue it with `nnp al resume {name}`")
    settings.check()
    lab = get_labeler(labeler)
    info = reg.resolve_dataset(dataset)
    if (info["params"] or {}).get("delta"):
        raise BadInput(f"dataset {info['ref']} is a delta version; a campaign adds labels of "
                       f"one level")
    level = lab.level["name"]
    if info["levels"] != [level]:
        raise BadInput(f"dataset {info['ref']} is labeled at {', '.join(info['levels'])}; "
                       f"labeler {labeler!r} labels at {level}; start from a dataset version "
                       f"of that level")
    others = {d["name"] for d in reg.list_datasets()}
    if name in others and name != info["name"]:
        raise BadInput(f"dataset {name!r} exists and is not {info['ref']}'s dataset; the "
                       f"campaign's dataset versions would be added to it: pick another "
                       f"campaign name")
    if any(m["name"] == name for m in reg.list_models()):
        raise BadInput(f"model {name!r} exists; the campaign registers its committees as "
                       f"model {name!r}: pick another campaign name")
    frames = read_seeds(seeds)
    elements = sorted(reg.show_dataset(info["ref"])["elements"])
    check_elements(frames, elements, info["ref"])
    if settings.sampler == "pool":
        keys = [a.info.get("trajectory", a.info.get("group", i)) for i, a in enumerate(frames)]
        order = {k: g for g, k in enumerate(dict.fromkeys(map(str, keys)))}
        settings.groups = [order[str(k)] for k in keys]
    prepare_training(reg, info["ref"], ensemble=settings.ensemble, device=settings.device,
                     config=dict(settings.train_config), name=name, seed=settings.seed,
                     epochs=settings.epochs, patience=settings.patience)
    return {"labeler": lab, "dataset": info, "seeds": frames}


def start(reg_url, name: str, dataset: str, labeler: str, seeds, settings: Settings, *,
          client=None, on_event=None) -> dict:
    """Check, create and run a new campaign; returns its status (``campaign_status``)."""
    with registry_of(reg_url) as reg:
        plan = prepare(reg, name, dataset, labeler, seeds, settings)
        level = plan["labeler"].ensure_level(reg)
        from .seeds import store_seeds

        seed_ids = store_seeds(reg, plan["seeds"], source=f"al {name} seeds")
        store.create_campaign(reg, name, labeler=plan["labeler"].spec, level_id=level["id"],
                              dataset_version_id=plan["dataset"]["id"],
                              settings=settings.to_dict(), seeds=seed_ids)
        return run_campaign(reg, name, client=client, on_event=on_event)


def resume(reg_url, name: str, *, client=None, on_event=None) -> dict:
    """Continue a stopped or failed campaign where it stopped; refused for an unknown or
    finished campaign and for one another live process is running."""
    with registry_of(reg_url) as reg:
        store.check_resumable(reg, name)
        return run_campaign(reg, name, client=client, on_event=on_event)


def run_campaign(reg, name: str, *, client=None, on_event=None) -> dict:
    """Iterate the campaign until it stops (module docstring); returns its status."""
    from registry.active_learning.status import campaign_status

    from .. import cluster

    emit = on_event or (lambda ev: None)
    with reg.run("active_learning", {"campaign": name}) as run:
        c = store.claim_campaign(reg, name, run.id)
        run.consumed("dataset_version", c["dataset"]["id"], ref=c["dataset"]["ref"],
                     sha256=c["dataset"]["hash"])
        s = Settings.from_dict(c["settings"])
        emit({"event": "campaign", "name": name, "run_id": run.id, "settings": s.to_dict(),
              "labeler": c["labeler"], "level": c["level"], "dataset": c["dataset"]["ref"]})
        try:
            ctx = nullcontext(client) if client is not None else cluster.dask_client()
            with ctx as dask:
                reason = _iterate(reg, c, s, dask, emit, run)
        except KeyboardInterrupt:
            store.close_campaign(reg, c["id"], "stopped")
            raise
        except BaseException as exc:
            store.close_campaign(reg, c["id"], "failed",
                                 error=f"{type(exc).__name__}: {exc}".rstrip(": "))
            raise
        store.close_campaign(reg, c["id"], "finished", stop_reason=reason)
        run.result = {"stop_reason": reason}
    emit({"event": "finished", "name": name, "stop_reason": reason})
    return campaign_status(reg, name)


def stop_reason(reg, c: dict, s: Settings, done: list[dict]) -> str | None:
    """Why the campaign stops after its iterations ``done`` (None: go on)."""
    from registry.active_learning.candidates import iteration_counts

    counts = iteration_counts(reg, [it["id"] for it in done])
    last = done[-1]
    attempted = sum(n["n_labeled"] + n["n_failed"] for n in counts.values())
    if s.budget is not None and attempted >= s.budget:
        return f"budget: {attempted} of {s.budget} labels computed"
    if len(done) >= s.iterations:
        return f"iterations: {len(done)} of {s.iterations} done"
    frac = last["fraction_above"]
    if frac is not None and frac < s.stop_fraction:
        return (f"converged: {frac:.1%} of the sampled frames above the threshold "
                f"{s.threshold:g}, below --stop-fraction {s.stop_fraction:g}")
    if counts[last["id"]]["n_selected"] == 0:
        return (f"no candidate to label in iteration {last['iteration']} (none above the "
                f"threshold {s.threshold:g} that is not labeled yet)")
    return None


def _iterate(reg, c: dict, s: Settings, client, emit, run) -> str:
    from registry.active_learning.candidates import iteration_counts
    from registry.store.runs import add_edges, edge

    clock = phases.Clock()
    while True:
        it = current_iteration(reg, c["id"])
        if it is None:
            it = open_iteration(reg, c["id"], 0, c["dataset"]["id"])
        elif it["phase"] == "done":
            done = list_iterations(reg, c["id"])
            reason = stop_reason(reg, c, s, done)
            if reason is not None:
                return reason
            nxt = it["new_dataset_version_id"] or it["dataset_version_id"]
            it = open_iteration(reg, c["id"], it["iteration"] + 1, nxt)
        k = it["iteration"]
        previous = None
        if k > 0:
            previous = list_iterations(reg, c["id"])[k - 1]
        emit({"event": "iteration", "iteration": k, "phase": it["phase"],
              "dataset": it["dataset_version"]})
        if it["phase"] == "train":
            it = phases.phase_train(reg, c, s, it, previous, client, emit, clock)
        if it["phase"] == "sample":
            it = phases.phase_sample(reg, c, s, it, client, emit, clock)
        if it["phase"] == "select":
            before = iteration_counts(reg, [p["id"] for p in list_iterations(reg, c["id"])
                                            if p["id"] != it["id"]])
            attempted = sum(n["n_labeled"] + n["n_failed"] for n in before.values())
            it = phases.phase_select(reg, c, s, it, emit, clock, attempted)
        if it["phase"] == "label":
            it = phases.phase_label(reg, c, it, client, emit, clock)
        if it["phase"] == "ingest":
            it = phases.phase_ingest(reg, c, it, emit, clock)
        if it["phase"] == "dataset":
            it = phases.phase_dataset(reg, c, it, emit, clock)
        it = update_iteration(reg, it["id"], seconds={"bookkeeping": clock.take()})
        outputs = [edge("model_version", it["model_version_id"], ref=it["model_version"],
                        iteration=k)]
        if it["new_dataset_version_id"] is not None:
            outputs.append(edge("dataset_version", it["new_dataset_version_id"],
                                ref=it["new_dataset_version"], iteration=k))
        with reg.session() as sess:  # recorded now: a killed campaign keeps them
            add_edges(sess, run.id, outputs=outputs)
        n = iteration_counts(reg, [it["id"]])[it["id"]]
        emit({"event": "iteration_done", "iteration": k, "model": it["model_version"],
              "dataset": it["new_dataset_version"], "threshold": it["threshold"],
              "fraction_above": it["fraction_above"], "seconds": it["seconds"],
              "metrics": it["metrics"], **{key: v for key, v in n.items() if key != "rho"}})
