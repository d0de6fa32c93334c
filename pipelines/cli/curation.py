"""Curation commands: reference energies, label retraction, impact and near-duplicates."""

from __future__ import annotations

import typer

from ._app import app, console, on_interrupt, open_registry, print_json
from .levels import levels_app

label_app = typer.Typer(help="Labels: errata.", no_args_is_help=True)
app.add_typer(label_app, name="label")


@levels_app.command("reference-energies")
def reference_energies(
    level: str = typer.Argument(..., help="Level of theory."),
    fit: str = typer.Option(None, "--fit", help="Fit by least squares on this dataset REF."),
    set_: str = typer.Option(None, "--set", help="By hand: H=-13.6,C=-1029.5 (eV)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Show, fit or set the atomic reference energies of a level."""
    from registry.curation.reference_energies import parse_assignments
    from registry.errors import BadInput

    if fit and set_:
        raise BadInput("give --fit REF or --set H=...,C=..., not both")
    with open_registry() as reg:
        if fit:
            out = reg.fit_reference_energies(level, fit)
        elif set_:
            out = reg.set_reference_energies(level, parse_assignments(set_))
        else:
            out = reg.reference_energies(level)
    if as_json:
        return print_json(out)
    console.print(f"[bold]{out['level']}[/] reference energies (eV):", highlight=False)
    for sym, e in out["energies"].items():
        console.print(f"  {sym:>3} {e:16.6f}  {out['method'][sym]}", highlight=False)
    if "rmse_eV" in out:
        console.print(f"  fit on {out['n_labels']} labels, RMSE {out['rmse_eV']:.4f} eV"
                      + (" (rank deficient)" if out["rank_deficient"] else ""),
                      highlight=False)


@label_app.command("retract")
def retract(
    filter: str = typer.Option(..., "--filter", "-f", help="OPTIMADE filter."),
    level: str = typer.Option(..., "--level", "-l", help="Level of the labels."),
    reason: str = typer.Option(..., "--reason", help="Why (stored with each label)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Mark the ok labels at LEVEL of matching structures retracted (never deleted)."""
    with open_registry() as reg:
        out = reg.retract_labels(filter=filter, level=level, reason=reason)
    if as_json:
        return print_json(out)
    console.print(f"retracted {out['retracted']} labels at {out['level']}", highlight=False)
    _print_impact(out["impact"])


@app.command("impact")
def impact(
    ref: str = typer.Argument(None, help="Dataset version NAME:V / NAME@ALIAS."),
    label: list[int] = typer.Option(None, "--label", help="Label id (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Dataset versions and model versions that used a dataset version or labels."""
    from registry.errors import BadInput

    if (ref is None) == (not label):
        raise BadInput("give a dataset REF or --label ID (one of them)")
    with open_registry() as reg:
        out = reg.impact(ref) if ref else reg.impact(label_ids=label)
    if as_json:
        return print_json(out)
    _print_impact(out)


def _print_impact(out: dict) -> None:
    if not out["dataset_versions"]:
        console.print("no dataset version uses them")
    for d in out["dataset_versions"]:
        given = "" if d["labels_given"] is None else f"{d['labels_given']} of the labels, "
        console.print(f"dataset {d['ref']}: {given}{d['retracted']} retracted labels",
                      highlight=False)
    for m in out["model_versions"]:
        console.print(f"model {m.get('ref', m['id'])} (dataset version "
                      f"{m['dataset_version_id']})", highlight=False)


@app.command("dedup")
@on_interrupt("nothing was changed (dedup only reads)")
def dedup(
    filter: str = typer.Option(None, "--filter", "-f", help="OPTIMADE filter (default: all)."),
    tolerance: float = typer.Option(..., "--tolerance", "-t", help="RMSD tolerance, Å."),
    workers: int = typer.Option(
        1, "--workers", "-w", min=0,
        help="Dask worker processes confirming candidate pairs (one task per share of "
             "compositions); 0: one per core; 1: in this process. With NNP_DASK_SCHEDULER "
             "set, that cluster is used whatever the number."),
    prefilter: bool = typer.Option(
        True, "--prefilter/--no-prefilter",
        help="Drop candidate pairs whose RMSD lower bound exceeds the tolerance before any "
             "alignment (same answer; off only to compare)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Clusters of structures equal up to rotation, translation, permutation and tolerance."""
    from registry.config import dask_scheduler

    with open_registry() as reg:
        if workers == 1 and not dask_scheduler():
            out = reg.near_duplicates(filter=filter, tolerance=tolerance, prefilter=prefilter)
        else:
            out = _dedup_on_dask(reg, filter, tolerance, prefilter, workers)
    if as_json:
        return print_json(out)
    console.print(f"{out['n_structures']} structures, {out['candidate_pairs']} candidate pairs, "
                  f"{len(out['clusters'])} clusters ({out['n_redundant']} redundant), "
                  f"{out['skipped_periodic']} periodic skipped, {out['seconds']} s",
                  highlight=False)
    for c in out["clusters"]:
        console.print(f"  {c['formula']}: " + " ".join(map(str, c["structure_ids"])),
                      highlight=False)


def _dedup_on_dask(reg, filter, tolerance, prefilter, workers: int) -> dict:
    """near_duplicates with the candidate pairs confirmed as Dask tasks (several per worker,
    so a slow composition does not hold the others back)."""
    import os

    from pipelines.cluster import dask_client

    with dask_client(workers or os.cpu_count()) as client:
        n = max(1, len(client.scheduler_info()["workers"]))

        def mapper(fn, work):
            return client.gather(client.map(fn, *zip(*work, strict=True), pure=False))

        return reg.near_duplicates(filter=filter, tolerance=tolerance, prefilter=prefilter,
                                   mapper=mapper, chunks=4 * n)
