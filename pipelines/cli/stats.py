"""``nnp stats``: what the registry holds."""

from __future__ import annotations

import typer

from ._app import app, console, open_store, print_json


@app.command("stats")
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Structures, labels per level (by status), elements present, database URL and size."""
    from rich.table import Table

    from registry.store.stats import stats as registry_stats

    with open_store() as store:  # the stats module alone: a quick cold start
        st = registry_stats(store)
    if as_json:
        return print_json(st)
    size = st["size_bytes"]
    console.print(f"database: {st['database']} ({st['dialect']}, "
                  f"{'?' if size is None else f'{size / 1e6:.1f} MB'})", highlight=False)
    console.print(f"structures: {st['structures']}", highlight=False)
    table = Table("level", "ok", "failed", "retracted")
    for name, by_status in st["labels"].items():
        table.add_row(name, *(str(by_status.get(k, 0)) for k in ("ok", "failed", "retracted")))
    console.print(table)
    console.print("elements: " + (", ".join(f"{el} ({n})" for el, n in st["elements"].items())
                                  or "(none)"), highlight=False)
