"""``nnp train`` and ``nnp evaluate``: ANI or HIP-NN ensembles trained on Dask, scored on
dataset versions.

Thin shells over :func:`pipelines.training.ensemble.train` and
:func:`pipelines.training.evaluate.evaluate`; torch, dask and matplotlib load only inside.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from ._app import app, console, err_console, open_registry, print_json

JSON = typer.Option(False, "--json", help="Print JSON.")
METRIC_COLUMNS = (("n", "n", "{}"), ("energy_mae_ev", "E MAE (eV)", "{:.4g}"),
                  ("energy_rmse_ev", "E RMSE (eV)", "{:.4g}"),
                  ("energy_mae_ev_per_atom", "E MAE/atom (eV)", "{:.4g}"),
                  ("forces_mae_ev_per_a", "F MAE (eV/Å)", "{:.4g}"),
                  ("forces_rmse_ev_per_a", "F RMSE (eV/Å)", "{:.4g}"))


def metrics_table(metrics: dict, title: str):
    """A rich table of ``{split: metrics}`` (force columns only when present)."""
    from rich.table import Table

    cols = [c for c in METRIC_COLUMNS if any(c[0] in m for m in metrics.values())]
    table = Table(title=title)
    table.add_column("split")
    for _, head, _ in cols:
        table.add_column(head, justify="right")
    for split, m in metrics.items():
        table.add_row(split, *("-" if m.get(k) is None else fmt.format(m[k])
                               for k, _, fmt in cols))
    return table


class _Progress:
    """Progress of the members: a rich bar each on a terminal, else a line per member."""

    def __init__(self, quiet: bool):
        self.quiet, self.bars, self.tasks = quiet, None, {}

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "start":
            self._start(ev)
        elif kind == "epoch" and self.bars is not None:
            val = ev.get("val_energy_mae_ev")
            self.bars.update(self.tasks[ev["member"]], completed=ev["epoch"],
                             description=f"member {ev['member']} "
                             f"val MAE {'-' if val is None else f'{val:.4f}'} eV")
        elif kind == "member":
            if self.bars is not None:
                task = self.tasks[ev["member"]]
                self.bars.update(task, total=self.bars.tasks[task].completed)
            elif not self.quiet:
                err_console.print(f"member {ev['member']} done on {ev['worker']}",
                                  highlight=False)
        elif kind == "registered" and not self.quiet and self.bars is None:
            err_console.print(f"registered {ev['model']} (run {ev['run_id']})",
                              highlight=False)

    def _start(self, ev: dict) -> None:
        again = (f", resuming run {ev['resumed_from']} at epochs {ev['resumed_at']}"
                 if ev.get("resumed_from") is not None else "")
        msg = (f"training {ev['ensemble']} member(s) of {ev['name']} on {ev['dataset']} "
               f"(train {ev['n_train']}, val {ev['n_val']}, test {ev['n_test']}; "
               f"{ev['device']}; run {ev['run_id']}{again})")
        if not err_console.is_terminal:
            if not self.quiet:
                err_console.print(msg, highlight=False)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        err_console.print(msg, highlight=False)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=err_console)
        self.bars.start()
        self.tasks = {k: self.bars.add_task(f"member {k}", total=ev["epochs"])
                      for k in range(ev["ensemble"])}

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()


@app.command("train")
def train(
    dataset: str = typer.Option(None, "--dataset", "-d",
                                help="Dataset version: NAME, NAME:V or NAME@ALIAS."),
    arch: str = typer.Option(None, help="Architecture: ani (torchani; the default) or hipnn "
                                        "(hippynn's HIP-NN)."),
    config: Path = typer.Option(None, "--config", "-c",
                                help="Settings file (.json or .yaml): widths, cutoffs, lr... "
                                     "(see docs/training.md)."),
    ensemble: int = typer.Option(None, "--ensemble", "-k",
                                 help="Members, one Dask task each (default 4)."),
    energy_weight: float = typer.Option(None, help="Weight of the energy loss (default 1)."),
    forces_weight: float = typer.Option(
        None, help="Weight of the force loss (default 0.1 when the dataset has forces)."),
    epochs: int = typer.Option(None, help="Most epochs (default 100)."),
    patience: int = typer.Option(None, help="Early stopping: epochs without a better "
                                            "validation loss (default 20)."),
    batch_size: int = typer.Option(None, help="Structures per batch (default 32)."),
    device: str = typer.Option(None, help="auto | cpu | cuda (default auto)."),
    seed: int = typer.Option(None, help="Member k is seeded SEED + k (default 0)."),
    name: str = typer.Option(None, help="Model name (default DATASET-ARCH)."),
    parent: str = typer.Option(None, "--from",
                               help="Transfer learning: start member k from member k mod n "
                                    "of this model version (its architecture is kept)."),
    freeze: list[str] = typer.Option(None, "--freeze",
                                     help="With --from: keep parameters whose names match "
                                          "fixed; a glob, or re:REGEX (repeatable)."),
    resume: int = typer.Option(None, "--resume", metavar="RUN_ID",
                               help="Continue a failed/interrupted train run from its last "
                                    "checkpoints, with its own settings (a new run)."),
    no_verify: bool = typer.Option(False, "--no-verify",
                                   help="Skip the verification checks of the new version "
                                        "(docs/verification.md); pull --strict then refuses "
                                        "it."),
    as_json: bool = JSON,
):
    """Train an ensemble on a dataset version and register it as one model version."""
    from pipelines.training import ensemble as ens
    from registry.errors import BadInput

    given = {"--dataset": dataset, "--arch": arch, "--config": config,
             "--ensemble": ensemble, "--energy-weight": energy_weight,
             "--forces-weight": forces_weight, "--epochs": epochs, "--patience": patience,
             "--batch-size": batch_size, "--device": device, "--seed": seed, "--name": name,
             "--from": parent, "--freeze": freeze or None}
    if resume is not None:
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise BadInput(f"--resume {resume} takes every setting from run {resume}; "
                           f"drop {', '.join(extra)}")
    elif dataset is None:
        raise BadInput("nnp train needs --dataset REF (or --resume RUN_ID)")
    with open_registry() as reg:
        url = reg.url
    progress = _Progress(quiet=False)
    try:
        if resume is not None:
            out = ens.resume(url, resume, on_event=progress)
        else:
            out = ens.train(url, dataset, arch=arch or "ani",
                            ensemble=4 if ensemble is None else ensemble, epochs=epochs,
                            patience=patience, batch_size=batch_size,
                            energy_weight=energy_weight, forces_weight=forces_weight,
                            seed=0 if seed is None else seed, name=name,
                            device=device or "auto",
                            config=str(config) if config is not None else None,
                            parent=parent, freeze=list(freeze or []), on_event=progress,
                            verify=not no_verify)
    finally:
        progress.stop()
    if as_json:
        doc = {"model": out["model"], "run_id": out["run_id"], "metrics": out["metrics"],
               "members": out["members"]}
        if resume is not None:
            doc["resumed_from"] = resume
        if "verification" in out:
            doc["verification"] = out["verification"]
        return print_json(doc)
    console.print(f"registered [bold]{out['model']}[/] (run {out['run_id']}"
                  f"{f', resuming run {resume}' if resume is not None else ''}, "
                  f"{out['seconds']:.1f} s)", highlight=False)
    console.print(metrics_table(out["metrics"], f"{out['model']}: ensemble mean"))
    if "verification" in out:
        v = out["verification"]
        state = {True: "passed", False: "FAILED", None: "not run"}[v.get("passed")]
        console.print(f"verification: {state}{': ' + v['error'] if v.get('error') else ''} "
                      f"(`nnp models show {out['model']}`)", highlight=False)
    for m in out["members"]:
        val = m["metrics"]["val"].get("energy_mae_ev")
        console.print(f"  member {m['member']} seed {m['seed']}: best epoch {m['best_epoch']}"
                      f"/{m['epochs']}, val E MAE "
                      f"{'-' if val is None else f'{val:.4g}'} eV, "
                      f"{m['seconds_per_epoch']:.3g} s/epoch on {m['worker']}",
                      highlight=False)


@app.command("evaluate")
def evaluate(
    model: str = typer.Argument(..., help="Model version: NAME, NAME:V or NAME@ALIAS."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset version to score on."),
    split: str = typer.Option("test", help="train | val | test | all."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Parity plot PNG (default MODEL_V-on-DATASET_V.png)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    as_json: bool = JSON,
):
    """Score a model version on a dataset version (recorded as a run); write a parity plot."""
    from pipelines.training.evaluate import evaluate as run_evaluate
    from registry.errors import BadInput

    if output is not None and not output.parent.is_dir():
        raise BadInput(f"-o {str(output)!r}: no such directory {str(output.parent)!r}")
    with open_registry() as reg:
        out = run_evaluate(reg, model, dataset, split=split, device=device)
    path = output or Path(_file_name(f"{out['model']}-on-{out['dataset']}") + ".png")
    path.write_bytes(out.pop("parity_png"))
    out["parity_png"] = str(path)
    if as_json:
        return print_json(out)
    console.print(metrics_table(out["metrics"], f"{out['model']} on {out['dataset']}"))
    console.print(f"parity plot: {path} (run {out['run_id']})", highlight=False)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)
