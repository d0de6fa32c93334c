"""``nnp models``: model versions (list, show, pull, alias, retract, register, export, import)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, err_console, open_registry, print_json

models_app = typer.Typer(help="Model versions. REF is NAME, NAME:VERSION or NAME@ALIAS.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

JSON = typer.Option(False, "--json", help="Print JSON.")
INT64_MAX = 2**63 - 1  # the largest count or version bound both backends bind


def _json_arg(value: str | None, what: str):
    import json

    from registry.errors import BadInput

    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None


@models_app.command("list")
def list_models(
    name: str = typer.Argument(None, help="A model: list its versions (newest first)."),
    limit: int = typer.Option(50, min=1, max=INT64_MAX, help="Versions per page."),
    before: int = typer.Option(None, min=1, max=INT64_MAX,
                               help="Show versions below this one (next page)."),
    as_json: bool = JSON,
):
    """List models, or the versions of NAME."""
    from rich.table import Table

    with open_registry() as reg:
        rows = reg.list_models() if name is None else \
            reg.list_model_versions(name, limit=limit, before=before)
    if as_json:
        return print_json(rows)
    if name is None:
        table = Table("name", "versions", "latest", "aliases", "description")
        for r in rows:
            al = ", ".join(f"{a}→{v}" for a, v in sorted(r["aliases"].items()))
            table.add_row(r["name"], str(r["versions"]), str(r["latest"] or "-"), al,
                          r["description"] or "")
    else:
        table = Table("version", "architecture", "members", "status", "aliases", "created")
        for r in rows:
            table.add_row(str(r["version"]), r["architecture"], str(r["n_members"]),
                          r["status"], ", ".join(r["aliases"]), str(r["created_at"])[:19])
    console.print(table)
    if name is not None and len(rows) == limit:
        console.print(f"(more: --before {rows[-1]['version']})")


@models_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
         as_json: bool = JSON):
    """Config, metrics, dataset version, parent, aliases, files with sizes and hashes."""
    with open_registry() as reg:
        info = reg.show_model(ref)
    if as_json:
        return print_json(info)
    for key in ("ref", "status", "status_reason", "architecture", "elements", "cutoff", "units",
                "level", "dataset_version", "parent", "frozen", "n_members", "metrics", "config",
                "aliases", "run_id", "created_at", "size", "content_hash"):
        if info.get(key) is not None:
            style = "bold red" if key == "status" and info[key] == "retracted" else "bold"
            console.print(f"[{style}]{key}[/]: {info[key]}", highlight=False)
    for f in info["files"]:
        console.print(f"  {f['name']:<28} {f['role']:<8} {f['size']:>12,d} B  {f['sha256']}",
                      highlight=False, soft_wrap=True)


@models_app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
    out: Path = typer.Option(None, "-o", "--out", help="Directory (default ./NAME-VERSION)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse a retracted version."),
    as_json: bool = JSON,
):
    """Write the verified files of a version and a model.json manifest to a directory."""
    import warnings

    from registry.models.pull import RetractedModelWarning

    with open_registry() as reg, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RetractedModelWarning)
        if out is None:
            info = reg.show_model(ref)
            out = Path(f"{info['name']}-{info['version']}")
        pulled = reg.pull_model(ref, strict=strict, dest=out)
    for w in caught:
        if issubclass(w.category, RetractedModelWarning):
            err_console.print(f"[bold red on yellow]WARNING:[/] [bold red]{w.message}[/]",
                              highlight=False)
    summary = {"ref": pulled.ref, "path": str(pulled.path), "status": pulled.info["status"],
               "files": [f["name"] for f in pulled.info["files"]] + ["model.json"],
               "content_hash": pulled.info["content_hash"]}
    if as_json:
        return print_json(summary)
    console.print(f"pulled [bold]{pulled.ref}[/] ({len(pulled.blobs)} files, verified) "
                  f"to {pulled.path}", highlight=False)


@models_app.command("alias")
def alias(ref: str = typer.Argument(..., help="The version, e.g. NAME:3."),
          name: str = typer.Argument(..., help="The alias, e.g. production."),
          as_json: bool = JSON):
    """Point an alias at a version (moves it if set; recorded in provenance)."""
    with open_registry() as reg:
        res = reg.set_model_alias(ref, name)
    if as_json:
        return print_json(res)
    prev = f" (was {res['previous_version']})" if res["previous_version"] else ""
    console.print(f"{res['name']}@{res['alias']} → {res['version']}{prev}", highlight=False)


@models_app.command("retract")
def retract(ref: str = typer.Argument(..., help="NAME:VERSION."),
            reason: str = typer.Option(..., "--reason", help="Why (required)."),
            as_json: bool = JSON):
    """Mark a version retracted: pulls warn, --strict pulls refuse; `latest` skips it."""
    with open_registry() as reg:
        info = reg.retract_model(ref, reason)
    if as_json:
        return print_json(info)
    console.print(f"{info['ref']} retracted: {info['status_reason']}", highlight=False)


@models_app.command("register")
def register(
    name: str = typer.Argument(..., help="Model name."),
    weights: list[Path] = typer.Argument(..., help="One .safetensors file per member."),
    architecture: str = typer.Option(..., help="Architecture, e.g. ani."),
    config: str = typer.Option(None, help="Config as a JSON object."),
    elements: str = typer.Option(None, help="Comma-separated elements, e.g. H,C,N,O."),
    cutoff: float = typer.Option(None, help="Cutoff radius, Å."),
    level: str = typer.Option(None, help="Level of theory it was trained on."),
    dataset_version: str = typer.Option(None, help="Dataset version REF."),
    parent: str = typer.Option(None, help="Parent model REF (fine-tuning / transfer)."),
    metrics: str = typer.Option(None, help="Metrics as a JSON object."),
    extra: list[Path] = typer.Option(None, help="Extra file (repeatable)."),
    description: str = typer.Option(None, help="Model description (first version only)."),
    as_json: bool = JSON,
):
    """Register safetensors weights as the next version of NAME."""
    with open_registry() as reg:
        info = reg.register_model(
            name, [str(w) for w in weights], architecture=architecture,
            config=_json_arg(config, "--config"), metrics=_json_arg(metrics, "--metrics"),
            elements=elements.split(",") if elements else None, cutoff=cutoff, level=level,
            dataset_version=dataset_version, parent=parent, description=description,
            extras={p.name: str(p) for p in extra or []})
    if as_json:
        return print_json(info)
    console.print(f"registered [bold]{info['ref']}[/] ({info['n_members']} members, "
                  f"{info['size']:,d} B)", highlight=False)


@models_app.command("export")
def export(ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
           out: Path = typer.Option(..., "-o", "--out", help="Bundle file, e.g. m.nnp.zip."),
           as_json: bool = JSON):
    """Write a bundle: weights, config and a provenance manifest."""
    with open_registry() as reg:
        res = reg.export_model(ref, out)
    if as_json:
        return print_json(res)
    console.print(f"exported {res['ref']} to {res['path']} ({res['size']:,d} B)",
                  highlight=False)


@models_app.command("import")
def import_(path: Path = typer.Argument(..., help="A bundle written by `nnp models export`."),
            name: str = typer.Option(None, help="Register under this name."),
            as_json: bool = JSON):
    """Register a bundle in this registry, keeping its file hashes."""
    with open_registry() as reg:
        info = reg.import_model(path, name=name)
    if as_json:
        return print_json(info)
    console.print(f"imported as [bold]{info['ref']}[/] (content {info['content_hash'][:12]})",
                  highlight=False)
