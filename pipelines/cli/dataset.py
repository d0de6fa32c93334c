"""``nnp dataset``: immutable dataset versions (create, list, show, diff, alias, materialize)."""

from __future__ import annotations

import typer

from ._app import app, console, on_interrupt, open_registry, print_json

dataset_app = typer.Typer(help="Immutable dataset versions.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("create")
@on_interrupt("a version is written in one transaction, so it is either complete or absent; "
              "see `nnp dataset list`")
def create(
    name: str = typer.Argument(..., help="Dataset name (created on first use)."),
    filter: str = typer.Option(None, "--filter", "-f", help="OPTIMADE filter (default: all)."),
    level: list[str] = typer.Option(..., "--level", "-l",
                                    help="Level of theory; repeat for aligned multi-fidelity."),
    split: str = typer.Option("0.8,0.1,0.1", help="train,valid,test fractions (sum 1)."),
    group_by: str = typer.Option("formula", help="formula | source | none: a group stays in "
                                                 "one split."),
    stratify_by: str = typer.Option("none", help="none | formula: split each formula's groups "
                                                 "separately (with --group-by source or none), "
                                                 "so every formula is in training."),
    seed: int = typer.Option(0, min=0, help="Seed of the split (an integer >= 0)."),
    note: str = typer.Option(None, help="Free text."),
    delta: str = typer.Option(None, help="HIGH-LOW: train on the difference of two levels."),
    exclude_duplicates: float = typer.Option(
        None, help="Keep one structure per near-duplicate cluster (RMSD tolerance, Å)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Make the next version of NAME; `latest` moves to it."""
    with open_registry() as reg:
        v = reg.create_dataset_version(name, levels=level, filter=filter, split=split,
                                       group_by=group_by, seed=seed, note=note, delta=delta,
                                       exclude_duplicates=exclude_duplicates,
                                       stratify_by=stratify_by)
    if as_json:
        return print_json(v)
    sc = v["split_counts"]
    console.print(f"created [bold]{v['ref']}[/] {v['n_structures']} structures "
                  f"(train {sc['train']}, valid {sc['valid']}, test {sc['test']}) "
                  f"hash {v['hash'][:16]}", highlight=False)


@dataset_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Datasets, their versions and aliases."""
    from rich.table import Table

    with open_registry() as reg:
        data = reg.list_datasets()
    if as_json:
        return print_json(data)
    table = Table("version", "structures", "levels", "hash", "aliases", "created")
    for ds in data:
        for v in ds["versions"]:
            table.add_row(v["ref"], str(v["n_structures"]), ", ".join(v["levels"]),
                          v["hash"][:12], ", ".join(v["aliases"]), str(v["created_at"])[:19])
    console.print(table)


@dataset_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Counts per split, element and level, energy statistics, hash and parameters."""
    from pipelines.diversity.store import stored_numbers

    with open_registry() as reg:
        d = reg.show_dataset(ref)
        d["diversity"] = stored_numbers(reg, d["ref"])
    if as_json:
        return print_json(d)
    console.print(f"[bold]{d['ref']}[/]  hash {d['hash']}", highlight=False)
    for k in ("filter", "levels", "params", "note", "aliases", "created_at", "run_id"):
        console.print(f"  {k}: {d[k]}", highlight=False)
    console.print(f"  structures: {d['n_structures']}  splits: {d['split_counts']}",
                  highlight=False)
    console.print("  elements: " + ", ".join(f"{s} {v['structures']}" for s, v in
                                             d["elements"].items()), highlight=False)
    for name, st in d["per_level"].items():
        e = st["energy_eV"]
        console.print(f"  {name}: {st['labels']} labels ({st['retracted_since']} retracted "
                      f"since), energy mean {e['mean']} std {e['std']} min {e['min']} "
                      f"max {e['max']} eV", highlight=False)
    for div in d["diversity"]:  # stored by `nnp diversity` (docs/diversity.md)
        console.print(f"  diversity ({div['features']}, coverage of {div['reference']}, "
                      f"run {div['run_id']}): " + "; ".join(
                          f"{s} {n['n_environments']} environments, coverage "
                          f"{_num(n['coverage'])}, mean NN {_num(n['mean_nn_distance'])}, "
                          f"effective {_num(n['effective_environments'])}"
                          for s, n in div["elements"].items()), highlight=False)


def _num(x) -> str:
    return "-" if x is None else f"{x:.3g}"


@dataset_app.command("diff")
def diff(ref_a: str, ref_b: str,
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Structures added, removed, relabelled and moved between splits from REF_A to REF_B."""
    with open_registry() as reg:
        d = reg.diff_datasets(ref_a, ref_b)
    if as_json:
        return print_json(d)
    console.print(f"{d['a']} -> {d['b']}: {'identical' if d['identical'] else 'different'}; "
                  f"added {d['added']}, removed {d['removed']}, relabelled {d['relabelled']}, "
                  f"split changed {d['split_changed']}, unchanged {d['unchanged']}",
                  highlight=False)


@dataset_app.command("alias")
def alias(ref: str = typer.Argument(..., help="NAME:VERSION (or NAME@ALIAS)."),
          name: str = typer.Argument(..., help="Alias, e.g. production (not `latest`, which "
                                               "always names the newest version).")):
    """Point an alias of the dataset at a version."""
    with open_registry() as reg:
        v = reg.alias_dataset(ref, name)
    console.print(f"{v['name']}@{name} -> {v['ref']}", highlight=False)


@dataset_app.command("materialize")
@on_interrupt("arrays reach the cache only once complete; re-run to build them")
def materialize(ref: str,
                no_cache: bool = typer.Option(False, "--no-cache", help="Bypass the cache."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Build (or load from the cache) the training arrays of a version; print a summary."""
    with open_registry() as reg:
        m = reg.materialize(ref, cache=not no_cache)
    s = m.summary()
    if as_json:
        return print_json(s)
    console.print(f"{s['ref']}: {s['n_structures']} structures in {len(s['buckets'])} buckets "
                  f"from {s['source']} (cache {s['cache']}) in {s['seconds']} s",
                  highlight=False)
