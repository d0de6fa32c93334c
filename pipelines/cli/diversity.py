"""``nnp diversity``: t-SNE maps of atomic environments and diversity numbers.

A thin shell over :func:`pipelines.diversity.analysis.diversity`; torch, dask, openTSNE and
matplotlib load only inside.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, err_console, on_interrupt, open_registry, print_json


class _Progress:
    """Rich bars (features, one per t-SNE) on a terminal; a line per step otherwise."""

    def __init__(self, quiet: bool):
        self.quiet, self.bars, self.tasks = quiet, None, {}

    def __enter__(self):
        if err_console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=err_console)
            self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bars is not None:
            self.bars.__exit__(*exc)

    def __call__(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "plan":
            self._line("maps: " + ", ".join(f"{s} {m}" for s, m in ev["maps"].items()))
        elif kind == "features":
            self._bar(f"features ({ev['what']})", ev["done"], ev["total"])
        elif kind == "embed" and "done" in ev:
            self._bar(f"t-SNE {ev['element']}", ev["done"], ev["total"])
        elif kind == "embed":
            how = "placing" if ev.get("transform") else "embedding"
            self._line(f"{ev['element']}: {how} {ev['n']} environments")

    def _bar(self, name: str, done: int, total: int) -> None:
        if self.bars is None:
            return
        if name not in self.tasks:
            self.tasks[name] = self.bars.add_task(name, total=total)
        self.bars.update(self.tasks[name], completed=done, total=total)

    def _line(self, text: str) -> None:
        if not self.quiet and self.bars is None:
            err_console.print(text, highlight=False)


def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


@app.command("diversity")
@on_interrupt("the diversity run is marked interrupted (`nnp runs list`); maps and numbers "
              "are reused and shown only from runs that finished")
def diversity(
    refs: list[str] = typer.Argument(..., help="Dataset versions (NAME, NAME:V, NAME@ALIAS), "
                                               "compared on one map per element."),
    element: list[str] = typer.Option(None, "--element", "-e",
                                      help="Element to map (repeat); default: every element "
                                           "of the data."),
    features: str = typer.Option("aev", "--features",
                                 help="aev (ANI-1x atomic environment vectors) or "
                                      "model:MODEL_REF (a registered ANI model's last hidden "
                                      "layer)."),
    sample: int = typer.Option(5000, "--sample",
                               help="Environments per element on a fitted map: more are "
                                    "sampled by dataset, iteration and split."),
    color_by: str = typer.Option("dataset", "--color-by",
                                 help="dataset | iteration | split | source | energy."),
    perplexity: float = typer.Option(30.0, "--perplexity",
                                     help="t-SNE perplexity (needs more than 3x as many "
                                          "environments)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling and of t-SNE."),
    reference: str = typer.Option(None, "--reference",
                                  help="Coverage is of this version's environments "
                                       "(default: of all REFs together)."),
    output: Path = typer.Option(Path("diversity.png"), "--output", "-o",
                                help="The map, one panel per element (PNG)."),
    refit: bool = typer.Option(False, "--refit",
                               help="Fit new maps even when stored ones could be reused or "
                                    "extended."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """t-SNE maps of atomic environments per element, and diversity numbers in feature space.

    A map of the same inputs is reused; one over some of these versions is extended by
    placing the new environments into it (openTSNE transform), so AL iterations share a map.
    """
    from pipelines.diversity.analysis import diversity as run

    with open_registry() as reg, _Progress(quiet=as_json) as progress:
        out = run(reg, refs, elements=element or None, features=features, sample=sample,
                  color_by=color_by, perplexity=perplexity, seed=seed, reference=reference,
                  output=output, refit=refit, on_event=progress)
    if as_json:
        return print_json(out)
    from rich.table import Table

    table = Table(title=f"diversity of {', '.join(out['refs'])} ({out['features']}; "
                        f"coverage of {out['reference']})")
    for col in ("element", "environments", "on map", "coverage", "mean NN dist",
                "effective", "map"):
        table.add_column(col, justify="left" if col in ("element", "map") else "right")
    for sym, n in out["elements"].items():
        m = n["map"]
        table.add_row(sym, f"{n['n_environments']:,}", f"{m['n_points']:,}",
                      _fmt(n["coverage"]), _fmt(n["mean_nn_distance"]),
                      _fmt(n["effective_environments"], ".1f"),
                      f"{m['mode']} {m['sha256'][:12]}")
    console.print(table)
    console.print(f"map: {out['png']}  (run {out['run_id']})", highlight=False)
