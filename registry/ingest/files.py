"""Ingesting files: every file read and checked first, then one ingest run listing them.

Only the reading side is imported up front, so that :func:`ingest_files_into` can start
the readers of a large file and import and open the database while they run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..io.readers import ReadOptions
from .pass1 import Progress, read_files

if TYPE_CHECKING:
    from .api import IngestSummary


def ingest_files(reg, paths: Sequence[str | os.PathLike], level: str | None = None,
                 **kwargs) -> IngestSummary:
    """Read every file (all checked first, a chunk of ``batch_size`` frames at a time, see
    :mod:`registry.ingest.stream`), then ingest them into ``reg`` as one run whose inputs
    list each file with its sha256 and size (keywords: :func:`ingest_files_into`)."""
    return ingest_files_into(lambda: reg, paths, level, **kwargs)


def ingest_files_into(open_store: Callable[[], object], paths: Sequence[str | os.PathLike],
                      level: str | None = None, *, units: str = "eV", energy_key=None,
                      forces_key=None, dipole_key=None, charges_key=None, stress_key=None,
                      skip_missing: bool = False, source: str | None = None,
                      batch_size: int = 20000, on_file: Progress | None = None,
                      on_progress: Progress | None = None) -> IngestSummary:
    """:func:`ingest_files` into the store ``open_store()`` returns; it is called once,
    while the first file is being read when other processes read it."""
    opts = ReadOptions(level, units, energy_key, forces_key, dipole_key, charges_key,
                       stress_key, skip_missing, source)
    params = {"files": [str(p) for p in paths], "level": level, "units": units,
              **opts.keys(), "skip_missing": skip_missing, "source": source,
              "batch_size": batch_size}
    stores = []
    read = read_files(paths, opts, batch_size=batch_size, on_file=on_file,
                      while_reading=lambda: stores.append(open_store()))
    try:
        from .stream import write_files

        return write_files(stores[0], read, on_progress=on_progress, params=params)
    finally:
        read.close()
