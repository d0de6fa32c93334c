"""The Typer app, consoles and helpers shared by the command modules."""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings

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

# Set by the top-level `--debug` option (or NNP_DEBUG=1); read by main().
state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(
        False, "--debug",
        help="On an unexpected error show the full traceback (and Python warnings) instead "
             "of one line; NNP_DEBUG=1 does the same.")):
    # main() reads NNP_DEBUG itself: an option's envvar is parsed differently across typer
    # versions, and the flag only ever turns debugging on.
    if debug:
        state["debug"] = True
        warnings.simplefilter("default")


class Interrupted(Exception):  # noqa: N818  (a state, not a fault)
    """Ctrl-C inside a command; ``str()`` says what was kept. main() prints it, exit 130.

    A plain Exception on purpose: typer swallows a KeyboardInterrupt that leaves a command
    (typer 0.2x turns it into a bare exit status, older ones into an Abort) and with it
    anything the command knew about what it had committed.
    """


def on_interrupt(kept: str):
    """Decorator (below ``@app.command``): Ctrl-C ends the command with
    ``interrupted: <kept>`` and exit status 130."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                raise Interrupted(kept) from None

        return wrapper

    return decorate


def open_registry(check_schema: bool = True):
    """The registry at NNP_DATABASE_URL (imported lazily); a new database gets its schema."""
    from registry.core import Registry

    return _noted(Registry(check_schema=check_schema))


def open_store():
    """The store at NNP_DATABASE_URL without the :class:`~registry.Registry` facade, for the
    quick commands (query --count, stats, models pull): they call the one stage module they
    need, so a cold start does not import every stage (numpy, ingest, file formats)."""
    from registry.store.base import Store

    return _noted(Store())


def _noted(store):
    """``store``, after a note on stderr when opening it created the schema of a new database."""
    if store.created_schema:
        from registry.store.engine import SCHEMA_REVISION

        where = store.engine.url.render_as_string(hide_password=True)
        err_console.print(f"created the registry schema (revision {SCHEMA_REVISION}) in the "
                          f"new database {where}", highlight=False, soft_wrap=True,
                          markup=False)
    return store


def _finite(obj):
    """``obj`` with NaN and infinities as null: JSON has no spelling for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def print_json(obj) -> None:
    """Valid JSON on stdout (sorted keys; NaN/inf as null; times as ISO 8601 UTC with Z;
    other objects as strings)."""
    from registry.times import json_default

    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=json_default, sort_keys=True,
                                allow_nan=False) + "\n")


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
