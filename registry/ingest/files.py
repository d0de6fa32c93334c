"""Ingesting files: every file read and checked first, then one ingest run listing them."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..io.readers import ReadOptions
from .api import IngestSummary, Progress
from .stream import ingest_files_streaming


def ingest_files(reg, paths: Sequence[str | os.PathLike], level: str | None = None, *,
                 units: str = "eV", energy_key=None, forces_key=None, dipole_key=None,
                 charges_key=None, stress_key=None, skip_missing: bool = False,
                 source: str | None = None, batch_size: int = 20000,
                 on_file: Progress | None = None,
                 on_progress: Progress | None = None) -> IngestSummary:
    """Read every file (all checked first, a chunk of ``batch_size`` frames at a time, see
    :mod:`registry.ingest.stream`), then ingest them as one run whose inputs list each file
    with its sha256 and size."""
    opts = ReadOptions(level, units, energy_key, forces_key, dipole_key, charges_key,
                       stress_key, skip_missing, source)
    params = {"files": [str(p) for p in paths], "level": level, "units": units,
              **opts.keys(), "skip_missing": skip_missing, "source": source,
              "batch_size": batch_size}
    return ingest_files_streaming(reg, paths, opts, batch_size=batch_size, on_file=on_file,
                                  on_progress=on_progress, params=params)
