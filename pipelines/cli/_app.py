"""The Typer app, consoles and helpers shared by the command modules."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="nnp",
    help="nnp-registry: structures, multi-fidelity labels, dataset and model versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def open_registry(check_schema: bool = True):
    """The registry at NNP_DATABASE_URL (imported lazily)."""
    from registry.core import Registry

    return Registry(check_schema=check_schema)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, sort_keys=True) + "\n")


def progress_bar(description: str):
    """A rich progress bar; returns (progress, callback(done, total))."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err_console, transient=False,
                        disable=not err_console.is_terminal)
    task = progress.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update
