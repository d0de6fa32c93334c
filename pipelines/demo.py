"""The main job, end to end on the embedded default: sample, label, ingest, report, export.

1. Langevin MD of small H/C/N/O molecules with ASE's EMT, one Dask task per trajectory.
2. A second, higher level (GFN2-xTB via tblite) for every 4th frame, labeling fanned out on Dask.
3. Deduplicated ingest of both levels into the registry (one provenance run each).
4. Stats and an export of everything to extxyz.
5. An immutable dataset version of the EMT labels (80/10/10 split), printed.
6. A small ANI-style potential trained on it, registered as a model version with its
   parity plot, aliased ``production``, pulled back (hash-verified) and checked, and its
   lineage printed and drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MOLECULES = ("H2O", "NH3", "CH4", "CH3OH", "C2H6", "C2H4", "HCN", "H2CO", "CH3CN", "HCOOH")
LOW, HIGH = "emt", "gfn2-xtb"
DATASET, MODEL = "demo-emt", "demo-radial"


@dataclass
class DemoConfig:
    frames_per_molecule: int = 40
    temperature_k: float = 500.0
    high_every: int = 4
    seed: int = 7
    epochs: int = 150
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
    for level in (LOW, HIGH):
        reg.add_level(level, **calculator_info(level))

    with dask_client() as client:
        console.print(f"dask: {len(client.scheduler_info()['workers'])} workers "
                      f"({client.scheduler.address})")
        futures = [client.submit(md_sample, m, cfg.frames_per_molecule, cfg.temperature_k,
                                 cfg.seed + i, LOW, pure=False)
                   for i, m in enumerate(MOLECULES)]
        trajectories = _gather(client, futures, console, "MD sampling (EMT)")
        frames = [f for traj in trajectories for f in traj]
        subset = frames[:: cfg.high_every]
        chunks = [subset[i: i + 20] for i in range(0, len(subset), 20)]
        futures = [client.submit(relabel, c, HIGH, pure=False) for c in chunks]
        high = [f for part in _gather(client, futures, console, "labeling (GFN2-xTB)")
                for f in part]

    summaries = {}
    for level, data in ((LOW, frames), (HIGH, high)):
        summaries[level] = _ingest(reg, data, level, console)
    stats = reg.stats()
    _print_stats(stats, console)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    result = {"ingest": {k: v.to_dict() for k, v in summaries.items()}, "stats": stats}
    result["export"] = _export(reg, cfg.out_dir / "demo.extxyz", console)
    result["dataset"] = _dataset(reg, console, cfg.seed)
    result["model"] = _model(reg, result["dataset"]["ref"], cfg, console)
    reg.close()
    return result


def _dataset(reg, console, seed: int) -> dict:
    version = reg.create_dataset_version(
        DATASET, levels=[LOW], split="0.8,0.1,0.1", group_by="none", seed=seed,
        note="nnp demo: EMT MD frames of small molecules")
    info = reg.show_dataset(f"{DATASET}:{version['version']}")
    console.print(f"dataset version [bold]{DATASET}:{version['version']}[/] "
                  f"hash {info['hash'][:16]}  structures {info['n_structures']}  "
                  f"splits {info.get('split_counts')}")
    return {"ref": f"{DATASET}:{version['version']}", "hash": info["hash"],
            "n_structures": info["n_structures"], "splits": info.get("split_counts")}


def _model(reg, dataset_ref: str, cfg: DemoConfig, console) -> dict:
    from rich.progress import Progress

    from registry.models.lineage import lineage_tree

    from .reporting import draw_tree_png, rich_tree
    from .training.demo_model import train_and_register, unbucket
    from .training.fit import pad
    from .training.radial import RadialPotential
    from .training.torch_io import load_state_dicts

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training (radial AEV + MLP)", total=cfg.epochs)
        trained = train_and_register(
            reg, dataset_ref, MODEL, LOW, cfg.out_dir, epochs=cfg.epochs, seed=cfg.seed,
            on_epoch=lambda e, n, loss: progress.update(task, completed=e))
    ref = trained["model"]["ref"]
    reg.set_model_alias(ref, "production")
    m = trained["metrics"]
    console.print(f"model [bold]{ref}[/] (alias production): test energy RMSE "
                  f"{m.get('test_energy_rmse_ev', float('nan')):.4f} eV "
                  f"({m.get('test_energy_rmse_ev_per_atom', float('nan')):.4f} eV/atom); "
                  f"parity plot {trained['parity_png']}")
    # pull by alias (hash-verified), rebuild the module and check it reproduces the fit
    import torch

    pulled = reg.pull_model(f"{MODEL}@production")
    model = RadialPotential.from_config(pulled.config).double()
    model.load_state_dict(load_state_dicts(pulled)[0])
    numbers, positions, energies, _ = unbucket(reg.materialize(dataset_ref))
    z, x = pad(numbers[:8], positions[:8])
    with torch.no_grad():
        pred = model(z, x).numpy()
    console.print(f"pulled {MODEL}@production: energies of 8 structures, max |pred - ref| "
                  f"{float(abs(pred - energies[:8]).max()):.4f} eV")
    tree = lineage_tree(reg.lineage(ref))
    console.print(rich_tree(tree))
    png = cfg.out_dir / "lineage.png"
    draw_tree_png(tree, png)
    console.print(f"lineage drawn to {png}")
    return {"ref": ref, "metrics": m, "parity_png": trained["parity_png"],
            "lineage_png": str(png)}


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
        summary = reg.ingest(frames, level, source="nnp demo",
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
