"""``nnp ingest``: read files (every ASE format, ASE .db and .aselmdb, ANI HDF5, MPtrj JSON)
into the registry."""

from __future__ import annotations

import math
import os
import socket
from contextlib import ExitStack
from pathlib import Path

import typer

from ._app import Interrupted, app, console, err_console, open_store, print_json, progress_bar


@app.command("ingest")
def ingest(
    files: list[Path] = typer.Argument(..., help="Files: extxyz/xyz, ASE .db, .aselmdb, "
                                                 ".traj, ANI .h5, MPtrj .json, or anything "
                                                 "ASE reads."),
    level: str = typer.Option(None, "--level", "-l",
                              help="Level of theory of the labels (created on first use); "
                                   "without it only structures are stored."),
    energy_key: str = typer.Option(None, help="Per-frame energy key, e.g. energy_wb97x "
                                              "(default: energy / the calculator's; HDF5: "
                                              "energies)."),
    forces_key: str = typer.Option(None, help="Per-atom forces key (default: the energy key "
                                              "with 'energy' -> 'forces', e.g. forces_wb97x)."),
    dipole_key: str = typer.Option(None, help="Dipole key (default follows the energy key)."),
    charges_key: str = typer.Option(None, help="Partial-charges key (default follows the "
                                               "energy key)."),
    stress_key: str = typer.Option(None, help="Stress key (default follows the energy key)."),
    units: str = typer.Option("eV", help="Energy unit of the file: eV, hartree, kcal/mol or "
                                         "kJ/mol (forces in that unit per Å)."),
    skip_missing: bool = typer.Option(False, "--skip-missing",
                                      help="Skip frames lacking the keys (else: an error)."),
    source: str = typer.Option(None, help="Source text stored with new structures "
                                          "(default: the file name)."),
    batch_size: int = typer.Option(20000, min=1, help="Structures per transaction; files "
                                                      "are read and checked in chunks of as "
                                                      "many frames (memory holds one)."),
    parallel: int = typer.Option(1, "--parallel", min=1,
                                 help="Read the files as shards on this many Dask workers "
                                      "(or the NNP_DASK_SCHEDULER cluster), then write them "
                                      "by concurrent transactions; one run lists every "
                                      "shard. 1: one process."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Ingest FILES as one run: all files are read and checked first, then written in batches.

    Existing structures and identical labels are counted, not duplicated; a different label
    for an existing (structure, level) is a conflict: reported, not written.
    """
    from registry.chem.units import energy_factor

    energy_factor(units)  # unknown units: an error before any reading
    committed = {"batches": 0, "total": None}

    def writing(done: int, total: int) -> None:  # called after each committed batch
        committed["batches"] += 1
        committed["total"] = total
        progress.update(task_files, description="writing", completed=done, total=total)

    from registry.ingest.files import ingest_files_into

    opened: dict = {}

    def open_it():
        # a Store, not the Registry facade: an ingest does not import the other stages
        reg = opened["reg"] = stack.enter_context(open_store())
        from registry.store.runs import list_runs

        opened["last_run"] = max((r["id"] for r in list_runs(reg, limit=1)), default=0)
        return reg

    # The store is opened (SQLAlchemy imported, the schema checked) while the reader
    # processes of a large HDF5 file run.
    with ExitStack() as stack:
        progress, update = progress_bar("reading")
        try:
            with progress:
                task_files = progress.tasks[0].id
                if parallel > 1 and len(files) > 1:
                    summary = _ingest_shards(open_it(), files, level, parallel, batch_size,
                                             update, writing, energy_key=energy_key,
                                             forces_key=forces_key, dipole_key=dipole_key,
                                             charges_key=charges_key, stress_key=stress_key,
                                             units=units, skip_missing=skip_missing,
                                             source=source)
                else:
                    summary = ingest_files_into(
                        open_it, [str(f) for f in files], level, units=units,
                        energy_key=energy_key, forces_key=forces_key, dipole_key=dipole_key,
                        charges_key=charges_key, stress_key=stress_key,
                        skip_missing=skip_missing, source=source, batch_size=batch_size,
                        on_file=update, on_progress=writing)
        except KeyboardInterrupt:
            if parallel > 1 and len(files) > 1:  # the progress counted shards
                raise Interrupted(
                    f"{committed['batches']} of {len(files)} shards fully written; a shard "
                    "being written may have committed some of its batches (the ingest run, "
                    "marked interrupted, has the written shards' counts)") from None
            raise Interrupted(_kept(opened.get("reg"), opened.get("last_run", 0), committed,
                                    batch_size)) from None
    if as_json:
        return print_json(summary.to_dict())
    _print_summary(summary, level)


def _ingest_shards(reg, files, level, parallel: int, batch_size: int, on_file, on_progress,
                   **keys):
    """``--parallel``: the files as shards on a Dask cluster (pipelines.parallel_ingest)."""
    from pipelines.parallel_ingest import ingest_shards
    from registry.io.readers import ReadOptions

    units, skip_missing, source = keys.pop("units"), keys.pop("skip_missing"), keys.pop("source")
    opts = ReadOptions(level, units, keys["energy_key"], keys["forces_key"], keys["dipole_key"],
                       keys["charges_key"], keys["stress_key"], skip_missing, source)
    params = {"files": [str(f) for f in files], "level": level, "units": units, **opts.keys(),
              "skip_missing": skip_missing, "source": source, "batch_size": batch_size,
              "parallel": parallel}
    return ingest_shards(reg, [str(f) for f in files], opts, parallel=parallel,
                         batch_size=batch_size, params=params, on_file=on_file,
                         on_progress=on_progress)


def _kept(reg, last_run: int, committed: dict, batch_size: int) -> str:
    """What an interrupted ingest kept: ``N of M batches committed``.

    The count of progress calls is exact on SQLite; on PostgreSQL a batch already being
    written when Ctrl-C came still commits, so the run's recorded totals (this process's
    ingest run, newer than ``last_run``) are read too and the larger count wins.
    """
    n, total = committed["batches"], committed["total"]
    run_id = None
    try:
        from registry.store.runs import get_run, list_runs

        # (no store yet: interrupted before it was opened, so nothing was written)
        for r in list_runs(reg, kind="ingest", limit=5) if reg is not None else ():
            if r["id"] <= last_run:
                break
            full = get_run(reg, r["id"])
            env = full.get("environment") or {}
            if env.get("pid") == os.getpid() and env.get("hostname") == socket.gethostname():
                run_id, result = r["id"], full.get("result") or {}
                stored = result.get("structures_new", 0) + result.get("structures_existing", 0)
                n = max(n, math.ceil(stored / batch_size))
                break
    except Exception:  # noqa: BLE001  (the message must not hide the interrupt)
        pass
    if run_id is None and not n:
        return "stopped before writing anything; re-run to ingest"
    of = "" if total is None else f" of {math.ceil(total / batch_size)}"
    run = "" if run_id is None else f" (run {run_id}, recorded as interrupted)"
    return f"{n}{of} batches committed{run}; re-run to complete"


def _print_summary(summary, level) -> None:
    from rich.table import Table

    table = Table("", "new", "existing", "conflicting", title=f"ingest run {summary.run_id}")
    table.add_row("structures", str(summary.structures_new), str(summary.structures_existing),
                  "")
    if level:
        table.add_row(f"labels ({level})", str(summary.labels_new), str(summary.labels_existing),
                      str(summary.labels_conflicting))
    console.print(table)
    console.print(f"{summary.frames_read} frames read, {summary.frames_skipped} skipped, "
                  f"{summary.duplicates_in_input} duplicates within the input, "
                  f"{summary.seconds:.2f} s", highlight=False)
    if summary.labels_conflicting:
        err_console.print(f"[bold yellow]warning:[/] {summary.labels_conflicting} labels differ "
                          f"from the stored ones and were not written (first: "
                          f"{summary.conflicts[0]['structure'][:16]} at "
                          f"{summary.conflicts[0]['level']}); see `nnp lineage` / run "
                          f"{summary.run_id}", highlight=False)
