"""``nnp al``: active learning by query-by-committee (start, resume, status, list).

Thin shells over :mod:`pipelines.active_learning.campaign` and ``.report``; torch, dask and
matplotlib load only inside. See docs/active-learning.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import Interrupted, app, console, err_console, open_registry, print_json

al_app = typer.Typer(help="Active learning by query-by-committee (resumable campaigns).",
                     no_args_is_help=True)
app.add_typer(al_app, name="al")

KILLED = ("campaign {name} stopped; what it finished is kept: `nnp al resume {name}` "
          "continues it")


class _Progress:
    """One rich bar per phase on a terminal, else a line per phase and iteration."""

    def __init__(self):
        self.bars = None
        self.task = None
        self.epochs: dict[int, int] = {}
        self.sampled = 0

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "campaign":
            self._line(f"campaign {ev['name']} (run {ev['run_id']}): labeler {ev['labeler']} "
                       f"({ev['level']}), from {ev['dataset']}")
        elif kind == "iteration":
            self._line(f"iteration {ev['iteration']}: {ev['phase']} (on {ev['dataset']})")
        elif kind == "train" and ev["train_event"] == "start":
            self._bar(f"  train {ev['ensemble']} members (run {ev['run_id']})",
                      ev["ensemble"] * ev["epochs"])
            self.epochs = {}
        elif kind == "train" and ev["train_event"] == "epoch":
            self.epochs[ev["member"]] = ev["epoch"]
            self._advance(sum(self.epochs.values()))
        elif kind == "trained":
            self._done(f"  trained {ev['model']}")
        elif kind == "sampling":
            self._bar(f"  sample {ev['trajectories']} trajectories", ev["total"])
            self.sampled = 0
        elif kind == "sampled":
            self._advance(ev["done"])
            self.sampled += ev["frames"]
            if ev["done"] == ev["total"]:
                self._done(f"  sampled {self.sampled} frames")
        elif kind == "selected":
            frac = ev["fraction_above"]
            self._line(f"  selected {ev['n_selected']} of {ev['n_candidates']} candidates "
                       f"({'-' if frac is None else f'{frac:.1%}'} above ρ "
                       f"{ev['threshold']:g} eV/√atom)")
        elif kind == "labeling":
            self._bar(f"  label {ev['total']} ({ev['labeler']})", ev["total"])
        elif kind == "labeled":
            self._advance(ev["done"])
            if ev["done"] == ev["total"]:
                self._done(f"  labeled {ev['total']}")
        elif kind == "ingested":
            self._line(f"  ingested {ev['labels']} labels (run {ev['run_id']})")
        elif kind == "iteration_done":
            self._line(f"  iteration {ev['iteration']} done: {ev['n_labeled']} labeled, "
                       f"{ev['n_failed']} failed; dataset {ev['dataset'] or '(unchanged)'}; "
                       f"{sum(ev['seconds'].values()):.1f} s")
        elif kind == "finished":
            self._line(f"finished: {ev['stop_reason']}")

    def _line(self, text: str) -> None:
        (self.bars.console if self.bars is not None else err_console).print(
            text, highlight=False)

    def _bar(self, text: str, total: int) -> None:
        if not err_console.is_terminal:
            return self._line(text)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.stop()
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                             transient=True)
        self.bars.start()
        self.task = self.bars.add_task(text, total=total)

    def _advance(self, done: int) -> None:
        if self.bars is not None:
            self.bars.update(self.task, completed=done)

    def _done(self, text: str) -> None:
        self.stop()
        self._line(text)

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None


def _run(fn, name: str, *args, **kwargs) -> dict:
    progress = _Progress()
    try:
        return fn(*args, on_event=progress, **kwargs)
    except KeyboardInterrupt:
        raise Interrupted(KILLED.format(name=name)) from None
    finally:
        progress.stop()


def _summary(report: dict, as_json: bool) -> None:
    if as_json:
        return print_json(report)
    from rich.table import Table

    table = Table(title=f"campaign {report['name']}: {report['state']}")
    for col in ("iter", "model", "candidates", "selected", "labeled", "failed", "ρ > thr",
                "dataset", "test F MAE (eV/Å)"):
        table.add_column(col, justify="right")
    for it in report["iterations"]:
        test = (it["metrics"] or {}).get("test") or {}
        f = test.get("forces_mae_ev_per_a")
        frac = it["fraction_above"]
        table.add_row(str(it["iteration"]), it["model_version"] or "-",
                      str(it["n_candidates"]), str(it["n_selected"]), str(it["n_labeled"]),
                      str(it["n_failed"]), "-" if frac is None else f"{frac:.1%}",
                      it["new_dataset_version"] or "-", "-" if f is None else f"{f:.4g}")
    console.print(table)
    for it in report["iterations"]:
        for div in it.get("diversity") or []:
            nums = "; ".join(f"{s} {n['n_environments']} environments, effective "
                             f"{_num(n['effective_environments'])}, coverage "
                             f"{_num(n['coverage'])}"
                             for s, n in sorted(div["elements"].items()))
            console.print(f"iteration {it['iteration']} diversity ({div['features']}, "
                          f"reference {div['reference']}): {nums}", highlight=False)
    console.print(f"labels: {report['labels_total']} ok, {report['labels_failed']} failed"
                  f"{'; stopped: ' + report['stop_reason'] if report['stop_reason'] else ''}"
                  f"{'; error: ' + report['error'] if report['error'] else ''}",
                  highlight=False)


def _num(x) -> str:
    return "-" if x is None else f"{x:.3g}"


@al_app.command("start")
def start(
    name: str = typer.Argument(..., help="Campaign name; also the name of its dataset "
                                         "versions and committee models."),
    dataset: str = typer.Option(..., "--dataset", "-d",
                                help="Starting dataset version: NAME, NAME:V or NAME@ALIAS "
                                     "(labeled at the labeler's level)."),
    labeler: str = typer.Option(..., "--labeler", "-l",
                                help="Reference calculator: emt, gfn2-xtb, gfn1-xtb, "
                                     "pyscf:XC/BASIS, pyscf:ccsd(t)/BASIS."),
    seeds: Path = typer.Option(..., "--seeds", "-s",
                               help="Seed structures: any file ASE reads (every frame; "
                                    "molecules and periodic cells)."),
    ensemble: int = typer.Option(4, "--ensemble", "-k", help="Committee members (>= 2)."),
    sampler: str = typer.Option("md", help="md (Langevin MD) | nms (normal-mode sampling) | "
                                           "pool (the seeds as a fixed candidate pool)."),
    selection: str = typer.Option("qbc", help="qbc (most disagreement first) | random "
                                              "(a baseline)."),
    temperatures: str = typer.Option("300,600,1000", help="Sampling temperatures, K "
                                                          "(comma-separated)."),
    steps: int = typer.Option(200, help="MD steps per trajectory (nms: samples)."),
    interval: int = typer.Option(10, help="MD: a candidate frame every this many steps."),
    timestep: float = typer.Option(0.5, help="MD time step, fs."),
    threshold: float = typer.Option(0.01, help="Select frames with ρ = σ(E)/√atoms above "
                                               "this, eV/√atom."),
    per_iteration: int = typer.Option(20, help="Most labels per iteration."),
    iterations: int = typer.Option(5, help="Most iterations."),
    budget: int = typer.Option(None, help="Most reference calculations in all."),
    stop_fraction: float = typer.Option(0.0, help="Stop when the fraction of sampled frames "
                                                  "above the threshold falls below this."),
    min_distance: float = typer.Option(0.5, help="Stop a trajectory when two atoms come "
                                                 "closer, Å (0: no check)."),
    max_force: float = typer.Option(50.0, help="Stop a trajectory when a force exceeds "
                                               "this, eV/Å (0: no check)."),
    epochs: int = typer.Option(100, help="Training epochs of the first committee."),
    warm_epochs: int = typer.Option(None, help="Epochs of a warm-started committee "
                                               "(default: --epochs)."),
    patience: int = typer.Option(20, help="Early-stopping patience, epochs."),
    from_scratch: bool = typer.Option(False, "--from-scratch",
                                      help="Train every committee from scratch instead of "
                                           "warm-starting from the previous one."),
    config: Path = typer.Option(None, "--config", "-c",
                                help="ANI settings file (.json/.yaml; docs/training.md)."),
    seed: int = typer.Option(0, help="Seed of training, sampling and random selection."),
    device: str = typer.Option("cpu", help="auto | cpu | cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the final status as JSON."),
):
    """Start a campaign: train, sample, select by disagreement, label, retrain."""
    from pipelines.active_learning.campaign import start as run_start
    from pipelines.active_learning.settings import Settings, parse_temperatures
    from pipelines.training.ani import read_config

    settings = Settings(
        ensemble=ensemble, sampler=sampler, selection=selection,
        temperatures=parse_temperatures(temperatures), steps=steps, interval=interval,
        timestep_fs=timestep, threshold=threshold, per_iteration=per_iteration,
        iterations=iterations, budget=budget, stop_fraction=stop_fraction,
        min_distance=min_distance, max_force=max_force, epochs=epochs,
        warm_epochs=warm_epochs, patience=patience, warm_start=not from_scratch,
        train_config=read_config(str(config)) if config is not None else {}, seed=seed,
        device=device)
    with open_registry() as reg:
        report = _run(run_start, name, reg, name, dataset, labeler, seeds, settings)
    _summary(report, as_json)


@al_app.command("resume")
def resume(
    name: str = typer.Argument(..., help="Campaign name."),
    as_json: bool = typer.Option(False, "--json", help="Print the final status as JSON."),
):
    """Continue a stopped or failed campaign where it stopped (no label or training repeated)."""
    from pipelines.active_learning.campaign import resume as run_resume

    with open_registry() as reg:
        report = _run(run_resume, name, reg, name)
    _summary(report, as_json)


@al_app.command("status")
def status(
    name: str = typer.Argument(..., help="Campaign name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    png: Path = typer.Option(None, "--png", help="Write the campaign's plot (ρ per "
                                                 "iteration, labels, errors) to this PNG."),
    diversity: bool = typer.Option(False, "--diversity", help="Compute (and store) the "
                                   "diversity numbers of iterations that lack them (ANI "
                                   "AEVs, every element; a local Dask cluster or "
                                   "NNP_DASK_SCHEDULER)."),
):
    """A campaign's state, iterations, labels, stop reason and diversity numbers."""
    from pipelines.active_learning.report import status as campaign_status
    from registry.errors import BadInput

    if png is not None and not png.parent.is_dir():
        raise BadInput(f"--png {str(png)!r}: no such directory {str(png.parent)!r}")
    with open_registry() as reg:
        report = campaign_status(reg, name, compute_diversity=diversity)
        if png is not None:
            from pipelines.active_learning.report import status_png

            png.write_bytes(status_png(reg, report))
    _summary(report, as_json)
    if png is not None and not as_json:
        console.print(f"plot: {png}", highlight=False)


@al_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Every campaign with its state."""
    from registry.active_learning.campaigns import list_campaigns

    with open_registry() as reg:
        rows = [{k: c[k] for k in ("name", "state", "labeler", "level", "stop_reason",
                                   "created_at")} | {"dataset": c["dataset"]["ref"]}
                for c in list_campaigns(reg)]
    if as_json:
        return print_json(rows)
    for c in rows:
        console.print(f"{c['name']}: {c['state']} ({c['labeler']}, from {c['dataset']})"
                      f"{' - ' + c['stop_reason'] if c['stop_reason'] else ''}",
                      highlight=False)


@al_app.command("example")
def example(
    system: str = typer.Argument(..., help="aluminium (EMT; fcc bulk, slabs, melt; periodic) "
                                           "| organic (GFN2-xTB; small H/C/N/O molecules)."),
    dataset: str = typer.Option(None, "--dataset", "-d",
                                help="Dataset name of the starting data (default "
                                     "al-start or organic-start)."),
    seeds: Path = typer.Option(None, "--seeds", "-s",
                               help="Where to write the seeds (default SYSTEM-seeds.extxyz)."),
    n: int = typer.Option(None, "-n", help="Starting structures (aluminium: cells, default "
                                           "24; organic: per molecule, default 6)."),
    seed: int = typer.Option(0, help="Random seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Ingest a documented campaign's starting data and write its seeds."""
    from pipelines.active_learning.systems import SYSTEMS, prepare_example
    from registry.errors import BadInput

    if system not in SYSTEMS:
        raise BadInput(f"unknown example system {system!r}; available: {', '.join(SYSTEMS)}")
    short = {"aluminium": "al", "organic": "organic"}[system]
    seeds = seeds or Path(f"{system}-seeds.extxyz")
    if not seeds.parent.is_dir():
        raise BadInput(f"--seeds {str(seeds)!r}: no such directory {str(seeds.parent)!r}")
    with open_registry() as reg:
        out = prepare_example(reg, system, dataset or f"{short}-start", seeds, n=n, seed=seed)
    if as_json:
        return print_json(out)
    console.print(f"{out['dataset']}: {out['structures']} structures labelled with "
                  f"{out['labeler']}; {out['n_seeds']} seeds in {out['seeds']}\nnext: nnp al "
                  f"start {short}-qbc --dataset {out['dataset']} --labeler {out['labeler']} "
                  f"--seeds {out['seeds']}", highlight=False, soft_wrap=True)
