"""The main job, end to end on the embedded default: sample, label, ingest, report, export.

1. Langevin MD of small H/C/N/O molecules with GFN2-xTB (tblite), one Dask task per
   trajectory; every frame keeps its GFN2-xTB energy and forces.
2. A second level (ASE's EMT) for every 4th frame, labeling fanned out on Dask.
3. Deduplicated ingest of both levels into the registry (one provenance run each).
4. Stats and an export of everything to extxyz.
5. An immutable dataset version of the GFN2-xTB labels (80/10/10 split), printed.
6. A small torchani ANI ensemble trained on it (one Dask task per member), registered as
   one model version with its metrics and parity plot, aliased ``production``, pulled back
   (hash-verified) and checked against GFN2-xTB, its lineage printed and drawn.
7. A two-iteration active-learning campaign from that dataset version
   (:func:`pipelines.active_learning.demo.run_demo_campaign`: committee MD of three seed
   molecules, the most uncertain frames labelled with GFN2-xTB, the dataset extended,
   retrained).
8. A t-SNE map of the campaign's H and C environments coloured by AL iteration, with the
   diversity numbers of every version (:func:`pipelines.diversity.diversity`).
9. A short Langevin MD of one molecule with ``NNPCalculator.from_registry(MODEL@production)``
   (the ensemble mean; each frame's energy_std recorded), itself an ``md`` run in provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MOLECULES = ("H2O", "NH3", "CH4", "CH3OH", "C2H6", "C2H4", "HCN", "H2CO", "CH3CN", "HCOOH")
# The model's level, and a second level on every 4th frame (multi-level labels). GFN2-xTB, not
# EMT, is what the model learns: EMT is no potential for molecules (they come apart in its
# MD), and a model of its labels did worse than trivial baselines (decision 0019).
LEVEL, SECOND = "gfn2-xtb", "emt"
DATASET, MODEL = "demo-xtb", "demo-ani"
SOURCE, CAMPAIGN = "nnp demo", "demo-al"
MD_MOLECULE = "CH3OH"
# A small network: the demo trains on two cores in well under a minute.
MODEL_CONFIG = {"hidden": [32, 16], "radial_shifts": 8, "angular_shifts": 4,
                "angular_sections": 4, "batch_size": 32, "lr": 1e-2}


@dataclass
class DemoConfig:
    frames_per_molecule: int = 40
    temperature_k: float = 500.0
    second_every: int = 4
    seed: int = 7
    epochs: int = 100
    members: int = 2
    md_steps: int = 300
    md_temperature_k: float = 300.0
    al_iterations: int = 2
    al_per_iteration: int = 12
    al_epochs: int = 40
    diversity_sample: int = 2000
    diversity_perplexity: float = 30.0
    out_dir: Path = field(default_factory=lambda: Path(".nnp/demo"))


def run_demo(cfg: DemoConfig, console) -> dict:
    """Run the demo against the registry at NNP_DATABASE_URL; returns a summary dict."""
    from registry import config
    from registry.core import Registry
    from registry.store.engine import upgrade

    from .cluster import dask_client
    from .simulation.calculators import calculator_info
    from .simulation.md import md_sample, relabel

    url = config.database_url()
    upgrade(url)
    reg = Registry(url)
    console.rule("[bold]nnp demo")
    console.print(f"registry: {reg.engine.url.render_as_string(hide_password=True)}")
    for level in (LEVEL, SECOND):
        reg.add_level(level, **calculator_info(level))

    with dask_client() as client:
        console.print(f"dask: {len(client.scheduler_info()['workers'])} workers "
                      f"({client.scheduler.address})")
        futures = [client.submit(md_sample, m, cfg.frames_per_molecule, cfg.temperature_k,
                                 cfg.seed + i, LEVEL, pure=False)
                   for i, m in enumerate(MOLECULES)]
        trajectories = _gather(client, futures, console, "MD sampling (GFN2-xTB)")
        frames = [f for traj in trajectories for f in traj]
        subset = frames[:: cfg.second_every]
        chunks = [subset[i: i + 20] for i in range(0, len(subset), 20)]
        futures = [client.submit(relabel, c, SECOND, pure=False) for c in chunks]
        second = [f for part in _gather(client, futures, console, "labeling (EMT)")
                  for f in part]

        summaries = {}
        for level, data in ((LEVEL, frames), (SECOND, second)):
            summaries[level] = _ingest(reg, data, level, console)
        stats = reg.stats()
        _print_stats(stats, console)
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        result = {"ingest": {k: v.to_dict() for k, v in summaries.items()}, "stats": stats}
        result["export"] = _export(reg, cfg.out_dir / "demo.extxyz", console)
        result["dataset"] = _dataset(reg, console, cfg.seed)
        # the members train on the same workers (no second cluster to start)
        result["model"] = _model(reg, result["dataset"]["ref"], cfg, console, client)
        result["active_learning"] = _active_learning(reg, result["dataset"]["ref"], cfg,
                                                     console, client)
        result["diversity"] = _diversity(reg, result["active_learning"], cfg, console, client)
    result["md"] = _md(reg, cfg, console)
    _lineage(reg, result["model"], cfg, console)
    reg.close()
    return result


def _dataset(reg, console, seed: int) -> dict:
    # only the demo's own MD frames: the campaign's labels join later versions
    version = reg.create_dataset_version(
        DATASET, levels=[LEVEL], split="0.8,0.1,0.1", group_by="none", seed=seed,
        filter=f'_nnp_source = "{SOURCE}"',
        note="nnp demo: GFN2-xTB MD frames of small molecules")
    info = reg.show_dataset(f"{DATASET}:{version['version']}")
    console.print(f"dataset version [bold]{DATASET}:{version['version']}[/] "
                  f"hash {info['hash'][:16]}  structures {info['n_structures']}  "
                  f"splits {info.get('split_counts')}")
    return {"ref": f"{DATASET}:{version['version']}", "hash": info["hash"],
            "n_structures": info["n_structures"], "splits": info.get("split_counts")}


def _model(reg, dataset_ref: str, cfg: DemoConfig, console, client) -> dict:
    from rich.progress import Progress

    from .simulation.calculators import make_calculator
    from .training.calculator import NNPCalculator
    from .training.ensemble import train

    with Progress(console=console, transient=True) as progress:
        tasks = {}

        def on_event(ev):
            if ev["event"] == "start":
                for k in range(ev["ensemble"]):
                    tasks[k] = progress.add_task(f"training ANI member {k}",
                                                 total=ev["epochs"])
            elif ev["event"] == "epoch" and ev.get("member") in tasks:
                progress.update(tasks[ev["member"]], completed=ev["epoch"])

        trained = train(reg, dataset_ref, arch="ani", ensemble=cfg.members,
                        epochs=cfg.epochs, patience=max(10, cfg.epochs // 4),
                        config=dict(MODEL_CONFIG), seed=cfg.seed, name=MODEL,
                        device="cpu", client=client, on_event=on_event,
                        description="nnp demo: torchani ANI ensemble on GFN2-xTB labels")
    ref = trained["model"]
    reg.set_model_alias(ref, "production")
    test = trained["metrics"].get("test", {})
    console.print(f"model [bold]{ref}[/] (alias production): torchani ANI, "
                  f"{len(trained['members'])} members, {trained['seconds']:.1f} s; test energy "
                  f"MAE {test.get('energy_mae_ev', float('nan')):.4f} eV "
                  f"({test.get('energy_mae_ev_per_atom', float('nan')):.4f} eV/atom), forces "
                  f"MAE {test.get('forces_mae_ev_per_a', float('nan')):.3f} eV/Å")
    # pull by alias (hash-verified): the parity plot stored with the version, and the
    # calculator rebuilt from the stored config, checked against GFN2-xTB on a fresh geometry
    pulled = reg.pull_model(f"{MODEL}@production")
    parity = cfg.out_dir / f"{MODEL}-parity.png"
    parity.write_bytes(pulled.extras["parity.png"])
    calc = NNPCalculator.from_registry(f"{MODEL}@production", registry=reg)
    from ase.build import molecule

    atoms = molecule(MD_MOLECULE)
    atoms.calc = make_calculator(LEVEL)
    e_ref = float(atoms.get_potential_energy())
    atoms.calc = calc
    e = float(atoms.get_potential_energy())
    console.print(f"pulled {MODEL}@production = {pulled.ref} (hash-verified, "
                  f"{pulled.info['architecture']}, {calc.n_members} members): {MD_MOLECULE} "
                  f"energy {e:.4f} eV (GFN2-xTB {e_ref:.4f} eV), ensemble spread "
                  f"{calc.results['energy_std']:.4f} eV; parity plot {parity}")
    return {"ref": ref, "architecture": pulled.info["architecture"],
            "members": calc.n_members, "metrics": trained["metrics"],
            "run_id": trained["run_id"], "parity_png": str(parity)}


def _active_learning(reg, dataset_ref: str, cfg: DemoConfig, console, client) -> dict:
    from .active_learning.demo import run_demo_campaign

    console.rule("[bold]active learning")
    return run_demo_campaign(reg, dataset_ref, name=CAMPAIGN, labeler=LEVEL,
                             out_dir=cfg.out_dir, client=client, console=console,
                             iterations=cfg.al_iterations, ensemble=cfg.members,
                             epochs=min(cfg.epochs, cfg.al_epochs),
                             per_iteration=cfg.al_per_iteration, seed=cfg.seed,
                             train_config=MODEL_CONFIG)


def _diversity(reg, report: dict, cfg: DemoConfig, console, client) -> dict:
    """The campaign's versions on one t-SNE map per element, coloured by AL iteration (0:
    the starting data; k: the labels iteration k - 1 added)."""
    from .diversity import diversity

    refs = [it["new_dataset_version"] for it in report["iterations"]
            if it["new_dataset_version"]]
    png = cfg.out_dir / "diversity.png"
    out = diversity(reg, refs, elements=["H", "C"], sample=cfg.diversity_sample,
                    color_by="iteration", perplexity=cfg.diversity_perplexity,
                    seed=cfg.seed, output=png, client=client)
    for symbol, n in out["elements"].items():
        console.print(f"diversity {symbol}: {n['n_environments']} environments, effective "
                      f"{n['effective_environments']:.3g}, mean nearest-neighbour distance "
                      f"{n['mean_nn_distance']:.3g} ({n['map']['mode']} map)",
                      highlight=False)
    console.print(f"t-SNE map of {', '.join(refs)} coloured by AL iteration: {png}",
                  highlight=False)
    return {"refs": refs, "png": str(png), "run_id": out["run_id"],
            "elements": {s: {**{k: n[k] for k in ("n_environments", "coverage",
                                                  "mean_nn_distance",
                                                  "effective_environments")},
                             "iterations": [i["iteration"] for i in n["per_iteration"]]}
                         for s, n in out["elements"].items()}}


def _md(reg, cfg: DemoConfig, console) -> dict:
    import ase.io
    from ase.build import molecule
    from rich.progress import Progress

    from .simulation.dynamics import MDSettings, run_md
    from .training.calculator import NNPCalculator

    start = cfg.out_dir / "md_start.extxyz"
    ase.io.write(start, molecule(MD_MOLECULE), format="extxyz")
    out = cfg.out_dir / "md.extxyz"
    calc = NNPCalculator.from_registry(f"{MODEL}@production", registry=reg)
    settings = MDSettings(steps=cfg.md_steps, temperature_k=cfg.md_temperature_k,
                          timestep_fs=0.5, seed=cfg.seed, interval=10)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"MD {MD_MOLECULE} ({MODEL}@production)",
                                 total=cfg.md_steps)
        res = run_md(reg, f"{MODEL}@production", start, out, settings, calculator=calc,
                     overwrite=True,
                     on_step=lambda step, n, info: progress.update(task, completed=step))
    stop = f"; stopped early: {res.stop_reason}" if res.stop_reason else ""
    std = res.mean_energy_std_ev
    console.print(f"MD {MD_MOLECULE} with {res.model}: {res.steps_done} of {res.steps} steps "
                  f"at {cfg.md_temperature_k:g} K in {res.seconds:.1f} s, {res.frames} frames "
                  f"to {out}, mean energy_std "
                  f"{'-' if std is None else f'{std:.4f}'} eV (run {res.run_id}){stop}")
    return res.to_dict()


def _lineage(reg, model: dict, cfg: DemoConfig, console) -> None:
    from registry.models.lineage import lineage_tree

    from .reporting import draw_tree_png, rich_tree

    tree = lineage_tree(reg.lineage(model["ref"]))
    console.print(rich_tree(tree))
    png = cfg.out_dir / "lineage.png"
    draw_tree_png(tree, png)
    console.print(f"lineage drawn to {png}")
    model["lineage_png"] = str(png)


def _gather(client, futures, console, description):
    from dask.distributed import as_completed
    from rich.progress import Progress

    results = {}
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(description, total=len(futures))
        for fut in as_completed(futures):
            results[fut.key] = fut.result()
            progress.advance(task)
    return [results[f.key] for f in futures]


def _ingest(reg, frames, level, console):
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"ingest {level}", total=len(frames))
        summary = reg.ingest(frames, level, source=SOURCE,
                             on_progress=lambda d, t: progress.update(task, completed=d,
                                                                      total=t))
    console.print(f"ingest [bold]{level}[/]: {summary.structures_new} new structures, "
                  f"{summary.labels_new} new labels, {summary.labels_existing} existing, "
                  f"{summary.labels_conflicting} conflicting (run {summary.run_id})")
    return summary


def _print_stats(stats, console):
    from rich.table import Table

    table = Table(title="registry", show_header=True)
    table.add_column("level")
    table.add_column("ok labels", justify="right")
    for name, counts in stats["labels"].items():
        table.add_row(name, str(counts.get("ok", 0)))
    console.print(table)
    console.print(f"structures: {stats['structures']}  elements: "
                  + ", ".join(f"{k}={v}" for k, v in stats["elements"].items()))


def _export(reg, path: Path, console) -> dict:
    from registry.io.export import export

    info = export(reg, path, overwrite=True)
    console.print(f"exported to {path}")
    return info if isinstance(info, dict) else {"path": str(path)}
