"""``nnp models``: model versions (list, show, verify, pull, alias, retract, register, export,
import)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console, err_console, on_interrupt, open_registry, open_store, print_json

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
        table = Table("version", "architecture", "members", "status", "verified", "aliases",
                      "created")
        for r in rows:
            table.add_row(str(r["version"]), r["architecture"], str(r["n_members"]),
                          r["status"], _verified(r["verified"]), ", ".join(r["aliases"]),
                          str(r["created_at"])[:19])
    console.print(table)
    if name is not None and len(rows) == limit:
        console.print(f"(more: --before {rows[-1]['version']})")


@models_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
         as_json: bool = JSON):
    """Config, metrics, dataset version, parent, aliases, files with sizes and hashes."""
    from registry.models.info import show_model

    with open_store() as store:  # the model-info module alone: a quick cold start
        info = show_model(store, ref)
    if as_json:
        return print_json(info)
    from pipelines.training.torchscript import RECORD
    from registry.models.info import VERIFICATION

    metrics = dict(info.get("metrics") or {})
    record = metrics.pop(VERIFICATION, None)
    exported = metrics.pop(RECORD, None)
    info = {**info, "metrics": metrics or None, "verified": _verified(info.get("verified"))}
    for key in ("ref", "status", "status_reason", "verified", "architecture", "elements",
                "cutoff", "units", "level", "dataset_version", "parent", "frozen", "n_members",
                "metrics", "config", "aliases", "run_id", "created_at", "size", "content_hash"):
        if info.get(key) is not None:
            bad = (key == "status" and info[key] == "retracted") or \
                (key == "verified" and info[key] == "FAILED")
            style = "bold red" if bad else "bold"
            console.print(f"[{style}]{key}[/]: {info[key]}", highlight=False)
    if exported:
        console.print(_torchscript_line(exported), highlight=False)
    for f in info["files"]:
        console.print(f"  {f['name']:<28} {f['role']:<8} {f['size']:>12,d} B  {f['sha256']}",
                      highlight=False, soft_wrap=True)
    if record:
        console.print(verification_table(record))


def _torchscript_line(record: dict) -> str:
    from rich.markup import escape

    if record.get("available"):
        return (f"[bold]torchscript[/]: {escape(str(record.get('file')))} "
                f"({escape(str(record.get('output')))}; "
                f"`nnp models export REF --torchscript -o FILE.pt`)")
    return f"[bold yellow]torchscript[/]: not available: {escape(str(record.get('reason')))}"


def _verified(value) -> str:
    return {True: "passed", False: "FAILED", None: "-"}[value]


def verification_table(record: dict):
    """The checks of a verification record: value, threshold, verdict."""
    from rich.table import Table

    title = (f"verification: {'passed' if record.get('passed') else 'FAILED'} "
             f"(run {record.get('run_id')}, {str(record.get('recorded_at'))[:19]})")
    table = Table("check", "value", "threshold", "unit", "result", title=title)
    for name, c in record.get("checks", {}).items():
        value = "non-finite" if c.get("value") is None else f"{c['value']:.3g}"
        table.add_row(c.get("label") or name, value, f"{c['threshold']:.3g}",
                      c.get("unit") or "", "ok" if c["passed"] else "[bold red]FAILED[/]")
    return table


def _thresholds(items: list[str] | None) -> dict:
    from registry.errors import BadInput

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--threshold {item!r}: expected NAME=VALUE, e.g. forces_atol=0.01")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise BadInput(f"--threshold {item!r}: {value!r} is not a number") from None
    return out


@models_app.command("verify")
@on_interrupt("the verify run is recorded as interrupted; nothing was stored with the version")
def verify(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
    threshold: list[str] = typer.Option(
        None, "--threshold", "-t", help="NAME=VALUE, e.g. forces_atol=0.01 (repeatable; "
        "names and defaults in docs/verification.md)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1,
                             help="Seed of the structure picks, rotations and velocities."),
    device: str = typer.Option("cpu", help="auto | cpu | cuda."),
    as_json: bool = JSON,
):
    """Run the verification checks on a version and store them with it.

    Forces vs finite differences, invariance to rotation/translation/permutation, NVE
    energy drift, smoothness at the cutoffs (docs/verification.md). Exit status 1 when a
    check fails: the version is then refused by `nnp models pull --strict`.
    """
    from pipelines.training.verify import check_thresholds
    from pipelines.training.verify import verify as run_verify

    thresholds = check_thresholds(_thresholds(threshold))
    with open_registry() as reg:
        out = run_verify(reg, ref, seed=seed, thresholds=thresholds, device=device)
    if as_json:
        print_json(out)
    else:
        console.print(f"[bold]{out['ref']}[/] verified on {len(out['structures'])} "
                      f"structure(s) ({out['source']}), {out['seconds']['total']:.1f} s",
                      highlight=False)
        console.print(verification_table(out))
    if not out["passed"]:
        raise typer.Exit(1)


@models_app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
    out: Path = typer.Option(None, "-o", "--out", help="Directory (default ./NAME-VERSION)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse a retracted version, one that "
                                "failed verification or one never verified."),
    as_json: bool = JSON,
):
    """Write the verified files of a version and a model.json manifest to a directory."""
    import warnings

    from registry.models.info import show_model
    from registry.models.pull import FailedVerificationWarning, RetractedModelWarning, pull_model

    kinds = (RetractedModelWarning, FailedVerificationWarning)
    # the store and the two model modules alone (not the whole Registry): a quick cold start
    with open_store() as store, warnings.catch_warnings(record=True) as caught:
        for kind in kinds:
            warnings.simplefilter("always", kind)
        if out is None:
            info = show_model(store, ref)
            out = Path(f"{info['name']}-{info['version']}")
        pulled = pull_model(store, ref, strict=strict, dest=out)
    for w in caught:
        if issubclass(w.category, kinds):
            err_console.print(f"[bold red on yellow]WARNING:[/] [bold red]{w.message}[/]",
                              highlight=False)
    summary = {"ref": pulled.ref, "path": str(pulled.path), "status": pulled.info["status"],
               "verified": pulled.info["verified"],
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
           out: Path = typer.Option(..., "-o", "--out",
                                    help="Bundle file (m.nnp.zip), or with --torchscript the "
                                         "TorchScript file (m.pt)."),
           torchscript: bool = typer.Option(
               False, "--torchscript",
               help="Write the version's TorchScript export instead: it runs with plain "
                    "torch (torch.jit.load; docs/models.md)."),
           as_json: bool = JSON):
    """Write a bundle (weights, config, provenance) or the TorchScript model (--torchscript)."""
    if torchscript:
        return _export_torchscript(ref, out, as_json)
    with open_registry() as reg:
        res = reg.export_model(ref, out)
    if as_json:
        return print_json(res)
    console.print(f"exported {res['ref']} to {res['path']} ({res['size']:,d} B)",
                  highlight=False)


def _export_torchscript(ref: str, out: Path, as_json: bool):
    import hashlib
    import os
    import uuid

    from pipelines.training.torchscript import version_export

    with open_registry() as reg:
        blob, res = version_export(reg, ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.part")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    res = {**res, "path": str(out), "sha256": hashlib.sha256(blob).hexdigest()}
    if as_json:
        return print_json(res)
    console.print(f"wrote the TorchScript export of {res['ref']} to {out} "
                  f"({res['size']:,d} B, {res['source']})", highlight=False)


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
