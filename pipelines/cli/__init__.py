"""The ``nnp`` command line: a thin shell over :class:`registry.Registry`.

Every command module registers itself on ``app`` (or a sub-app) at import and imports heavy
modules (torch, dask, ase.io, matplotlib) only inside its functions, so start-up stays fast.

One error path (:func:`main`): a registry error or a usage error is a short message and exit
status 2; Ctrl-C is ``interrupted: <what was kept>`` and exit status 130; anything else is
``error: <Type>: <message>`` and exit status 1, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

from . import (  # noqa: F401  (each module registers its commands on the app)
    al,
    curation,
    dataset,
    db,
    demo,
    diversity,
    export,
    ingest,
    levels,
    lineage,
    md,
    models,
    query,
    runs,
    stats,
    train,
)
from ._app import Interrupted, app, console, err_console, state

__all__ = ["app", "console", "err_console", "main"]

EXIT_USAGE = 2  # also registry errors: the request was wrong, nothing changed
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
DEBUG_HINT = "re-run as `nnp --debug ...` (or with NNP_DEBUG=1) for the traceback"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    import typer.main

    from registry.errors import RegistryError

    state["debug"] = os.environ.get("NNP_DEBUG", "").strip().lower() in ("1", "true", "yes")
    command = typer.main.get_command(app)
    _catch_interrupts(command, "nnp")
    # Warnings (numpy's RuntimeWarning, library deprecations) are for developers: the
    # top-level callback turns them back on under --debug.
    with warnings.catch_warnings():
        if not state["debug"]:
            warnings.simplefilter("ignore")
        try:
            rv = command.main(args=argv, prog_name="nnp", standalone_mode=False)
        except Interrupted as exc:
            return _interrupted(str(exc))
        except KeyboardInterrupt:  # outside any command body (e.g. while parsing)
            return _interrupted(None)
        except RegistryError as exc:
            if state["debug"]:
                raise
            _error(str(exc))
            return EXIT_USAGE
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001  (the one place that turns errors into status)
            return _other_error(exc)
    if rv == EXIT_INTERRUPTED:  # typer 0.2x: a KeyboardInterrupt it caught itself
        return _interrupted(None)
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _other_error(exc: Exception) -> int:
    # typer >= 0.2x vendors click as ``typer._click`` and older typer uses ``click``: the
    # exception classes are recognised by name, from whichever package raised them.
    kinds = _click_kinds(exc)
    if "ClickException" in kinds:  # usage errors: the usage line, the problem, exit 2
        exc.show()
        return getattr(exc, "exit_code", EXIT_USAGE)
    if "Exit" in kinds:
        return getattr(exc, "exit_code", 0)
    if "Abort" in kinds:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # older click
            return _interrupted(None)
        _error("aborted")
        return 1
    if state["debug"]:
        raise exc
    text = str(exc).strip()
    text = text.splitlines()[0] if text else ""
    _error(f"{type(exc).__name__}: {text}".rstrip(": ") + f"\n{DEBUG_HINT}")
    return 1


def _click_kinds(exc: BaseException) -> set[str]:
    """Names of the click classes ``exc`` is an instance of (typer's vendored copy too)."""
    return {c.__name__ for c in type(exc).__mro__
            if c.__module__.split(".")[0] in ("click", "typer")}


def _error(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                      soft_wrap=True)


def _interrupted(kept: str | None) -> int:
    from rich.markup import escape

    err_console.print(f"[bold yellow]interrupted:[/] {escape(kept or 'stopped')}",
                      highlight=False, soft_wrap=True)
    return EXIT_INTERRUPTED


def _catch_interrupts(cmd, path: str) -> None:
    """Make Ctrl-C in any command's body an :class:`Interrupted` naming the command.

    Commands that know what they committed raise their own (``on_interrupt``, ``nnp
    ingest``); this covers every other one.
    """
    if cmd.callback is not None:
        cmd.callback = _interruptible(cmd.callback, path)
    for name, sub in getattr(cmd, "commands", {}).items():
        _catch_interrupts(sub, f"{path} {name}")


def _interruptible(fn, path: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted(f"`{path}` stopped before it finished; what it had committed "
                              "stays (see `nnp runs list`)") from None

    return wrapper


if __name__ == "__main__":
    sys.exit(main())
