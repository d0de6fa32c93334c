"""``nnp demo``: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, on_interrupt, print_json


@app.command("demo")
@on_interrupt("the steps finished so far stay in the registry (each is a run: see `nnp runs "
              "list`); re-run `nnp demo` to complete")
def demo(
    frames: int = typer.Option(40, help="MD frames kept per molecule."),
    temperature: float = typer.Option(500.0, help="MD temperature, K."),
    seed: int = typer.Option(7, help="Random seed."),
    epochs: int = typer.Option(100, help="Most training epochs of the demo model."),
    members: int = typer.Option(2, help="Ensemble members of the demo model."),
    md_steps: int = typer.Option(300, help="Steps of the closing MD run."),
    out: Path = typer.Option(Path(".nnp/demo"), help="Folder for exports and plots."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Sample by MD, label at two levels, ingest, export, train an ANI ensemble, run MD."""
    from pipelines.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(frames_per_molecule=frames, temperature_k=temperature,
                                 seed=seed, epochs=epochs, members=members,
                                 md_steps=md_steps, out_dir=out), console)
    if as_json:
        print_json(result)
