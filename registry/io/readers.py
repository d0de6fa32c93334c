"""Reading files into :class:`FrameBatch` es, a chunk of frames at a time: every format ASE
reads, ASE ``.db`` and fairchem's ASE-LMDB, the ANI/pyanitools HDF5 layout and MPtrj-style
JSON (ingesting them: :mod:`registry.ingest.files`).

Formats are chosen by extension (``.xyz``/``.extxyz`` extxyz, ``.db`` ASE database,
``.aselmdb`` ASE-LMDB, ``.traj`` ASE trajectory, ``.h5``/``.hdf5`` ANI HDF5, ``.json`` MPtrj
when it looks like it; anything else: ASE's own detection). extxyz is parsed by the compiled
parser of the ``extxyz`` package (:mod:`.extxyz_parser`) and by ASE where that parser cannot
vouch for the file (the reason is logged and recorded with the file). Every failure to read
becomes :class:`BadInput` naming the file (and frame when known). Frames are named
``"FILE frame K"`` (K from 0) in error messages.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path

from ..chem.frames import FrameBatch, concat
from ..errors import BadInput
from .extxyz_parser import FastPathUnavailable

_BY_EXTENSION = {".xyz": "extxyz", ".extxyz": "extxyz", ".db": "ase-db", ".traj": "traj",
                 ".h5": "ani-h5", ".hdf5": "ani-h5", ".aselmdb": "aselmdb"}
log = logging.getLogger(__name__)


@dataclass
class ReadOptions:
    """How to read labels from files (see ``nnp ingest --help``)."""

    level: str | None = None
    units: str = "eV"
    energy_key: str | None = None
    forces_key: str | None = None
    dipole_key: str | None = None
    charges_key: str | None = None
    stress_key: str | None = None
    skip_missing: bool = False
    source: str | None = None

    def __post_init__(self):
        if self.level is not None and (not isinstance(self.level, str)
                                       or not self.level.strip()):
            raise BadInput(f"empty level name (--level {self.level!r}): give the level of "
                           f"theory of the labels, e.g. --level pbe, or leave --level out "
                           f"to store structures only")

    def keys(self) -> dict:
        return {k: getattr(self, k) for k in ("energy_key", "forces_key", "dipole_key",
                                              "charges_key", "stress_key")}


def detect_format(path: str | os.PathLike) -> str:
    """Format name by extension (a ``.json`` file by its first bytes); ASE's detection for
    other extensions."""
    suffix = Path(path).suffix.lower()
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix]
    if suffix == ".json" and os.path.isfile(path):
        from .mptrj import looks_like_mptrj

        if looks_like_mptrj(str(path)):
            return "mptrj-json"
    from ase.io.formats import filetype

    try:
        return filetype(str(path), read=True)
    except Exception as exc:  # noqa: BLE001  (ASE raises many kinds)
        raise BadInput(f"{path}: cannot tell the file format ({exc})") from None


def check_input_file(path: str | os.PathLike) -> int:
    """The size of ``path``; :class:`BadInput` unless it is a regular file (a folder or a
    FIFO is refused from its ``stat``, without opening it, so a FIFO cannot block)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise BadInput(f"{path} is not a regular file ({kind})")
    return st.st_size


@dataclass
class FileReport:
    """One input file as read: recorded with it in the ingest run's inputs."""

    path: str
    format: str
    reader: str = ""  # "extxyz" (the compiled parser), "ase", "h5py" or "json"
    fallback: str | None = None  # why the compiled parser did not read it
    frames: int = 0
    skipped: int = 0


def open_file(path: str | os.PathLike) -> FileReport:
    """Check that ``path`` is a non-empty regular file and tell its format."""
    path = str(path)
    if check_input_file(path) == 0:
        raise BadInput(f"{path}: empty file (no frames)")
    return FileReport(path, detect_format(path))


def file_chunks(report: FileReport, opts: ReadOptions, size: int,
                fast: bool = True) -> Iterator[FrameBatch]:
    """The frames of ``report.path`` in batches of about ``size`` (not yet validated;
    quantities that only some frames carry, e.g. stress on crystals only, are masked per
    frame). ``report`` counts frames and skipped frames. extxyz goes through the compiled
    parser when ``fast``: :class:`FastPathUnavailable` (possibly after some batches) means
    read it again with ``fast=False``; :func:`each_chunk` does that."""
    path, fmt = report.path, report.format
    if fmt == "ani-h5":
        from .hdf5 import iter_ani_h5

        report.reader = "h5py"
        yield from iter_ani_h5(path, opts, size, report)
        return
    if fmt == "extxyz" and fast:
        from . import extxyz_parser

        report.reader = "extxyz"
        named = ((f"{path} frame {k}", a) for k, a in zip(count(), extxyz_parser.frames(path)))
    elif fmt == "mptrj-json":
        from . import mptrj

        report.reader = "json"
        named = ((f"{path} frame {k} ({fid})", a) for k, (fid, a) in
                 zip(count(), mptrj.frames(path)))
    else:
        report.reader = "ase"
        named = ((f"{path} frame {k}", a) for k, a in zip(count(), _ase_frames(path, fmt)))
    yield from _atoms_chunks(named, report, opts, size)


def _atoms_chunks(named: Iterable, report: FileReport, opts: ReadOptions,
                  size: int) -> Iterator[FrameBatch]:
    from .atoms import atoms_to_batches

    source = opts.source if opts.source is not None else report.path
    named = iter(named)
    while part := list(islice(named, size)):
        batches, skipped = atoms_to_batches(
            [a for _, a in part], opts.level, units=opts.units, skip_missing=opts.skip_missing,
            source=source, names=(n for n, _ in part), allow_empty=True, **opts.keys())
        report.skipped += skipped
        if batches:
            batch = concat(batches)
            report.frames += len(batch)
            yield batch
    if not report.frames:
        raise BadInput(f"{report.path}: no frames to ingest" + (
            f" ({report.skipped} skipped for missing keys)" if report.skipped
            else " (empty input)"))


def each_chunk(report: FileReport, opts: ReadOptions, size: int,
               consume: Callable[[FrameBatch], None], restart: Callable[[], None]) -> None:
    """``consume`` every batch of the file; where the compiled extxyz parser gives up
    (possibly after some batches), log why, call ``restart`` (forget what was consumed of
    this file) and read the file again with ASE."""
    try:
        for batch in file_chunks(report, opts, size):
            consume(batch)
    except FastPathUnavailable as exc:
        log.info("%s: read with ASE: %s", report.path, exc)
        restart()
        report.fallback, report.frames, report.skipped = str(exc), 0, 0
        for batch in file_chunks(report, opts, size, fast=False):
            consume(batch)


def read_file(path: str | os.PathLike, opts: ReadOptions) -> tuple[list[FrameBatch], int]:
    """One file as a list of one FrameBatch (not yet validated) and the number of frames
    skipped."""
    report = open_file(path)
    batches: list[FrameBatch] = []
    each_chunk(report, opts, 1 << 62, batches.append, batches.clear)
    return [concat(batches)], report.skipped


def _ase_frames(path: str, fmt: str):
    """Yield ASE Atoms of a file, turning ASE's exceptions into BadInput naming the frame."""
    k = 0
    try:
        if fmt in ("ase-db", "aselmdb"):
            yield from _db_frames(path, fmt)
            return
        import ase.io

        if fmt == "extxyz":
            _check_xyz_layout(path)
        for atoms in ase.io.iread(path, index=":", format=fmt):
            yield atoms
            k += 1
    except BadInput:
        raise
    except KeyError as exc:  # ASE: symbols2numbers on an unknown symbol
        where = f"{path} frame {k}"
        sym = exc.args[0] if exc.args else None
        if isinstance(sym, str) and sym.isalpha() and len(sym) <= 3:
            raise BadInput(f"{where}: unknown element {sym!r}") from None
        raise BadInput(f"{where}: cannot read as {fmt}: KeyError: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (ASE raises ValueError, AssertionError...)
        # ASE's readers fail with bare asserts and index errors on malformed text, so the
        # exception's own words may be empty or meaningless: then the file is "malformed".
        reason = str(exc).strip() or "malformed file"
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        at = f" (frame {k})" if k else ""
        raise BadInput(f"cannot read {path} as {fmt}{at}: {reason}") from None
    if k == 0 and fmt not in ("ase-db", "aselmdb"):
        raise BadInput(f"{path}: no frames in file")


_PROPERTIES = re.compile(r"""(?:^|\s)Properties=["']?([^\s"']+)""", re.I)
_PBC = re.compile(r"""(?:^|\s)pbc=(?:"([^"]*)"|'([^']*)'|(\S+))""", re.I)
_BOOLS = {"t", "f", "true", "false"}


def _comment_layout(path: str, k: int, lineno: int, line: str) -> int | None:
    """Columns per atom line that the comment's ``Properties`` declares (None: not given);
    a ``pbc`` that is not booleans is refused (ASE would read it as periodic everywhere)."""
    m = _PBC.search(line)
    if m:
        value = next(g for g in m.groups() if g is not None)
        flags = value.replace(",", " ").split()
        if not flags or len(flags) not in (1, 3) or any(f.lower() not in _BOOLS for f in flags):
            raise BadInput(f"{path} frame {k} (line {lineno}): pbc={value!r} is not three "
                           f"T/F flags")
    m = _PROPERTIES.search(line)
    if not m:
        return None
    parts = m.group(1).split(":")
    try:
        return sum(int(n) for n in parts[2::3]) if len(parts) % 3 == 0 else None
    except ValueError:
        return None


def _check_xyz_layout(path: str) -> None:
    """Check the xyz frame layout (count line, comment, atom lines) so errors name a frame."""
    k, state, left, start, blank_at, columns = 0, "count", 0, 0, None, None
    with open(path, errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if state == "count":
                if not line.strip():
                    blank_at = blank_at or lineno
                    continue
                if blank_at:
                    raise BadInput(f"{path} frame {k} (line {blank_at}): blank line where an "
                                   f"atom count was expected")
                try:
                    left = int(line.split()[0])
                except ValueError:
                    raise BadInput(f"{path} frame {k} (line {lineno}): expected an atom "
                                   f"count, got {line.strip()[:40]!r}") from None
                if left < 0:
                    raise BadInput(f"{path} frame {k} (line {lineno}): negative atom count")
                state, start = "comment", lineno
                continue
            if state == "atoms":
                n = len(line.split())
                if n < 4:
                    raise BadInput(f"{path} frame {k} (line {lineno}): malformed atom line "
                                   f"{line.strip()[:60]!r}")
                if columns is not None and n != columns:
                    raise BadInput(f"{path} frame {k} (line {lineno}): {n} columns where "
                                   f"Properties declares {columns}")
                left -= 1
            else:  # the comment line
                columns = _comment_layout(path, k, lineno, line)
            state = "atoms"
            if left == 0:
                state, k = "count", k + 1
    if state != "count":
        raise BadInput(f"{path} frame {k} (line {start}): file ends inside the frame "
                       f"(truncated?)")
    if k == 0:
        raise BadInput(f"{path}: no frames in file")


def _db_frames(path: str, fmt: str):
    """ASE database rows (SQLite ``.db`` or ASE-LMDB) as Atoms: key-value pairs -> info,
    data arrays -> arrays/info.

    ``total_charge`` (or ``charge``) and ``multiplicity`` key-value pairs set the charge and
    spin multiplicity.
    """
    import ase.db
    import numpy as np

    if fmt == "ase-db":
        _require_ase_db(path)
        db = ase.db.connect(path, type="db")
    else:
        _require_lmdb_backend()
        db = ase.db.connect(path, type="aselmdb", readonly=True)
    with db:
        for row in db.select():
            atoms = row.toatoms()
            n = len(atoms)
            kvp = dict(row.key_value_pairs)
            atoms.info.update(kvp)
            if "total_charge" in kvp:
                atoms.info["charge"] = atoms.info.pop("total_charge")
            for key, value in (row.get("data") or {}).items():
                if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n:
                    atoms.arrays[key] = value
                    if value.shape not in ((3,), (6,)):
                        continue
                atoms.info[key] = value
            yield atoms


def _require_ase_db(path: str) -> None:
    """Refuse (without touching it) a file that is not an ASE SQLite database."""
    import sqlite3

    try:
        with sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True) as conn:
            ok = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                              "AND name = 'systems'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"{path}: not an ASE database ({exc})") from None
    if not ok:
        raise BadInput(f"{path}: not an ASE database (no 'systems' table)")


def _require_lmdb_backend() -> None:
    try:
        import ase_db_backends.aselmdb  # noqa: F401
    except ImportError as exc:
        raise BadInput(f"reading ASE-LMDB (.aselmdb) files needs the ase-db-backends package "
                       f"(pip install ase-db-backends): {exc}") from None
