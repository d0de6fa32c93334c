"""``nnp runs``: the provenance runs (ingests, dataset creations, trainings, exports...)."""

from __future__ import annotations

import typer

from ._app import app, console, open_registry, print_json

INT64_MAX = 2**63 - 1  # run ids and counts are BIGINTs

runs_app = typer.Typer(help="Provenance runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def list_runs(
    kind: str = typer.Option(None, help="Only runs of this kind (ingest, train, ...)."),
    status: str = typer.Option(None, help="running, ok, failed or interrupted."),
    limit: int = typer.Option(20, min=1, max=INT64_MAX, help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Newest runs first; a killed run shows as `interrupted`."""
    from rich.table import Table

    with open_registry() as reg:
        rows = reg.list_runs(kind=kind, status=status, limit=limit)
    if as_json:
        return print_json(rows)
    table = Table("id", "kind", "status", "user", "started (UTC)", "code")
    colors = {"ok": "green", "failed": "red", "interrupted": "yellow"}
    for r in rows:
        st = r["status"]
        code = (r["code_version"] or "") + (f" @{r['git_commit'][:10]}" if r["git_commit"]
                                            else "")
        table.add_row(str(r["id"]), r["kind"], f"[{colors.get(st, 'white')}]{st}[/]",
                      r["user"] or "", str(r["started_at"])[:19], code)
    console.print(table)


@runs_app.command("show")
def show(run_id: int = typer.Argument(..., min=1, max=INT64_MAX, help="The run id."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """One run: parameters, result, environment, inputs and outputs."""
    with open_registry() as reg:
        run = reg.get_run(run_id)
    if as_json:
        return print_json(run)
    for key in ("id", "kind", "status", "user", "started_at", "ended_at", "code_version",
                "git_commit", "git_dirty", "params", "result", "environment", "error"):
        console.print(f"[bold]{key}[/]: {run[key]}", highlight=False)
    for role in ("inputs", "outputs"):
        console.print(f"[bold]{role}[/]:")
        for e in run[role]:
            ref = e["ref"] or ""
            sha = f" sha256 {e['sha256'][:12]}" if e["sha256"] else ""
            ident = f" #{e['entity_id']}" if e["entity_id"] is not None else ""
            console.print(f"  {e['entity_type']}{ident} {ref}{sha}", highlight=False)
