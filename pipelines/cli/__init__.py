"""The ``nnp`` command line: a thin shell over :class:`registry.Registry`.

Every command module registers itself on ``app`` (or a sub-app) at import and imports heavy
modules (torch, dask, ase.io, matplotlib) only inside its functions, so start-up stays fast.
"""

from __future__ import annotations

import sys

from . import (  # noqa: F401  (each module registers its commands on the app)
    curation,
    dataset,
    db,
    demo,
    export,
    ingest,
    levels,
    lineage,
    models,
    query,
    runs,
    stats,
)
from ._app import app, console, err_console

__all__ = ["app", "console", "err_console", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: registry errors become one clear line on stderr and exit status 2."""
    from registry.errors import RegistryError

    try:
        app(args=argv, standalone_mode=False)
    except RegistryError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # click usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            err_console.print("aborted")
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
