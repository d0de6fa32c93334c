"""``nnp md``: Langevin MD with a registered model, the trajectory written as extxyz.

A thin shell over :func:`pipelines.simulation.dynamics.run_md`; ASE and torch load only
inside. Exit status: 0 when the run finished or stopped early on a check (``stopped early``
and the reason are printed and recorded: the frames written are a valid trajectory), 2 for
bad input (nothing written), 130 on Ctrl-C (the frames so far are kept and recorded).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import (
    Interrupted,
    app,
    console,
    on_interrupt,
    open_registry,
    print_json,
    progress_bar,
)


@app.command("md")
@on_interrupt("stopped before the first MD step; nothing was written")
def md(
    model: str = typer.Argument(..., help="Model version: NAME, NAME:V or NAME@ALIAS."),
    structure: Path = typer.Option(..., "--structure", "-s",
                                   help="Start structure: any file ASE reads (its first "
                                        "frame; periodic cells too)."),
    steps: int = typer.Option(..., "--steps", help="MD steps."),
    temperature: float = typer.Option(..., "--temperature", "-t",
                                      help="Langevin thermostat temperature, K (also the "
                                           "initial Maxwell-Boltzmann velocities)."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Trajectory file, .extxyz or .xyz (written as extxyz)."),
    timestep: float = typer.Option(0.5, "--timestep", help="Time step, fs."),
    friction: float = typer.Option(0.01, "--friction", help="Langevin friction, 1/fs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the velocities and the thermostat."),
    min_distance: float = typer.Option(
        0.5, "--min-distance",
        help="Stop early when two atoms come closer than this, Å (0: no check)."),
    max_force: float = typer.Option(
        50.0, "--max-force",
        help="Stop early when the force on an atom exceeds this, eV/Å (0: no check)."),
    interval: int = typer.Option(10, "--interval",
                                 help="Write a frame every this many steps (and the last)."),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Run Langevin MD with a registered model (ensemble mean; energy_std per frame)."""
    from pipelines.simulation.dynamics import MDInterrupted, MDSettings, run_md

    settings = MDSettings(steps=steps, temperature_k=temperature, timestep_fs=timestep,
                          friction_per_fs=friction, seed=seed, min_distance=min_distance,
                          max_force=max_force, interval=interval)
    with open_registry() as reg:
        progress, update = progress_bar(f"MD {steps} steps")
        try:
            with progress:
                result = run_md(reg, model, structure, output, settings, overwrite=force,
                                device=device, on_step=lambda s, n, _: update(s, n))
        except MDInterrupted as exc:
            r = exc.result
            raise Interrupted(f"{r.last_step_written or 0} of {r.steps} steps written to "
                              f"{r.output} ({r.frames} frames; run {r.run_id} recorded as "
                              f"interrupted)") from None
    if as_json:
        return print_json(result.to_dict())
    std = result.mean_energy_std_ev
    std_text = "-" if std is None else f"{std:.4g} eV (max {result.max_energy_std_ev:.4g})"
    if result.stop_reason:
        console.print(f"[bold yellow]stopped early[/] at step {result.steps_done} of "
                      f"{result.steps}: {result.stop_reason}", highlight=False)
        console.print(f"wrote {result.frames} frames to [bold]{result.output}[/] (the last "
                      f"is the stopping frame); mean energy_std {std_text}; run "
                      f"{result.run_id}", highlight=False)
        return
    console.print(f"wrote {result.frames} frames (steps 0-{result.steps_done} every "
                  f"{interval}) to [bold]{result.output}[/] in {result.seconds:.1f} s; mean "
                  f"energy_std {std_text}; run {result.run_id}", highlight=False)
