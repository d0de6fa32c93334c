"""extxyz frames through the compiled parser of the ``extxyz`` package, with ASE's meaning.

ASE's reader parses every line in Python and builds an ``Atoms`` per frame; the ``extxyz``
package (PyPI) parses in C, several times faster. :func:`frames` yields
:class:`~registry.io.atoms.LightAtoms` that :func:`~registry.io.atoms.atoms_to_batches` reads
exactly as it reads ASE's ``Atoms``:
the same info keys, calculator results and per-atom arrays, under ASE's names and conventions
(``pos`` -> positions, per-atom ``charge`` -> charges, symbols capitalised, cell vectors as
rows, pbc true along all axes when a ``Lattice`` is given without ``pbc``, a 3x3 ``stress`` in
Voigt order).

The C parser is more lenient than ASE on some input: it reads hexadecimal floats, wraps
integers beyond 32 bits around, ends the file silently at a truncated last frame, and crashes
the process on an atom count of 0. So each file is first scanned for such numbers, each
frame's count line is read before the parser sees it, and the end of the file is checked.
Whatever the parser or these checks cannot vouch for raises :class:`FastPathUnavailable` with
the reason; the caller then reads the file with ASE, whose checks and errors apply.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ..chem.elements import atomic_numbers
from .atoms import LightAtoms


class FastPathUnavailable(Exception):
    """The compiled parser cannot vouch for this file; ``str(exc)`` says why."""


# Byte classes for the number scan: digits, characters that continue a float, the rest.
_CLASSES = bytes(ord("d") if chr(c).isdigit() and c < 128 else
                 ord(".") if c in b".eE" else ord(" ") for c in range(256))
_LONG_INT = b" " + b"d" * 10  # 10+ digits not after a decimal point: may not fit 32 bits
_BLOCK = 1 << 23
_WHITESPACE = b" \t\r\n\v\f"


def suspect_numbers(path: str) -> str | None:
    """Why the C parser may read a number of ``path`` differently from ASE, or None."""
    with open(path, "rb") as fh:
        tail = b" "
        while block := fh.read(_BLOCK):
            data = tail + block
            if b"0x" in data or b"0X" in data:
                return "a hexadecimal number (the C parser reads them, ASE refuses them)"
            if _LONG_INT in data.translate(_CLASSES):
                return "an integer of 10 or more digits (the C parser keeps 32 bits)"
            tail = data[-12:]
    return None


def _rest_is_blank(fd: int, pos: int, size: int) -> bool:
    while pos < size:
        chunk = os.pread(fd, _BLOCK, pos)
        if not chunk or chunk.strip(_WHITESPACE):
            return not chunk
        pos += len(chunk)
    return True


def frames(path: str) -> Iterator[LightAtoms]:
    """Frames of an extxyz file; :class:`FastPathUnavailable` where ASE must read it."""
    try:
        from extxyz import cextxyz
    except ImportError as exc:  # a hard dependency, but ASE can still read the file
        raise FastPathUnavailable(f"the extxyz package cannot be imported ({exc})") from None
    why = suspect_numbers(path)
    if why:
        raise FastPathUnavailable(f"the file holds {why}")
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    fp = cextxyz.cfopen(path, "r")
    if not fp:
        os.close(fd)
        raise FastPathUnavailable("the C parser cannot open the file")
    k = 0
    try:
        while True:
            pos = cextxyz.cftell(fp)
            head = os.pread(fd, 64, pos)
            if not head.strip(_WHITESPACE) and _rest_is_blank(fd, pos, size):
                break
            n = _atom_count(head, pos, size, k)
            try:
                nat, info, arrays = cextxyz.read_frame_dicts(fp, use_cleri=False)
            except EOFError:
                raise FastPathUnavailable(f"frame {k}: the file ends inside it") from None
            except cextxyz.ExtXYZError as exc:
                raise FastPathUnavailable(f"frame {k}: {exc}") from None
            if nat != n:
                raise FastPathUnavailable(f"frame {k}: {nat} atoms read, {n} declared")
            yield _frame(info, arrays, n, k)
            k += 1
    finally:
        cextxyz.cfclose(fp)
        os.close(fd)
    if k == 0:
        raise FastPathUnavailable("no frames")


def _atom_count(head: bytes, pos: int, size: int, k: int) -> int:
    """The count line as ASE reads it (``int(line)``), refusing what the parser mishandles
    (0 crashes it; text after the number is accepted by it, not by ASE)."""
    line = head.split(b"\n", 1)[0]
    if b"\n" not in head and pos + len(head) < size:
        raise FastPathUnavailable(f"frame {k}: count line longer than 64 bytes")
    text = line.strip(_WHITESPACE)
    if not text.isdigit() or int(text) == 0:
        raise FastPathUnavailable(f"frame {k}: count line {line[:40]!r} is not a positive "
                                  f"atom count")
    return int(text)


_NAMES = {"pos": "positions", "Z": "numbers", "charge": "charges", "species": "symbols"}
_SQUARE = ("stress", "virial")  # with Lattice: ASE's 3x3 keys (9 numbers, column-major)
_Z_OF: dict[str, int] = {}


def _numbers(symbols: np.ndarray, k: int) -> np.ndarray:
    out = []
    for s in symbols.tolist():
        z = _Z_OF.get(s)
        if z is None:
            z = atomic_numbers.get(s.capitalize())  # ASE capitalises symbols
            if z is None:
                raise FastPathUnavailable(f"frame {k}: unknown element {s!r}")
            _Z_OF[s] = z
        out.append(z)
    return np.array(out, dtype=np.int64)


# ASE's ``all_properties`` (calculator results) and, of those, the per-frame ones its extxyz
# reader moves out of ``info`` (``ase.io.extxyz.per_config_properties``); written out because
# importing ``ase.io`` costs more than reading a small file (tests/test_extxyz_parser.py
# checks them against ASE's).
ALL_PROPERTIES = frozenset({"energy", "forces", "stress", "stresses", "dipole", "charges",
                            "magmom", "magmoms", "free_energy", "energies",
                            "dielectric_tensor", "born_effective_charges", "polarization"})
PER_CONFIG_PROPERTIES = frozenset({"energy", "free_energy", "stress", "dipole", "magmom",
                                   "polarization", "dielectric_tensor"})


def _frame(info: dict, arrays: dict, n: int, k: int) -> LightAtoms:
    info.pop("Properties", None)
    if "uid" in info:  # ASE keeps its text unparsed
        raise FastPathUnavailable(f"frame {k}: a 'uid' key")
    lattice, pbc = info.pop("Lattice", None), info.pop("pbc", None)
    results = {}
    for key in list(info):
        value = info[key]
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "iufb":
                raise FastPathUnavailable(f"frame {k}: key {key!r} holds a list of text")
            if key in _SQUARE and value.shape != (3, 3):
                raise FastPathUnavailable(f"frame {k}: {key} is not 9 numbers")
            if key not in _SQUARE and value.ndim == 2:  # ASE reshapes only its 3x3 keys
                info[key] = value.ravel(order="F")
        elif key in _SQUARE:
            raise FastPathUnavailable(f"frame {k}: {key} is not 9 numbers")
        if key in PER_CONFIG_PROPERTIES:
            value = info.pop(key)
            if key == "stress":
                value = value[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            results[key] = value
    if lattice is None:
        cell = np.zeros((3, 3))
    elif isinstance(lattice, np.ndarray) and lattice.shape == (3, 3) and \
            lattice.dtype.kind in "iuf":
        cell = lattice.T.astype(np.float64)
    else:
        raise FastPathUnavailable(f"frame {k}: Lattice is not 9 numbers")
    if pbc is None:
        pbc = np.full(3, lattice is not None)
    elif isinstance(pbc, bool | np.bool_):
        pbc = np.full(3, bool(pbc))
    elif not (isinstance(pbc, np.ndarray) and pbc.dtype == bool and pbc.shape == (3,)):
        raise FastPathUnavailable(f"frame {k}: pbc {pbc!r} is not three T/F flags")
    per_atom = {_NAMES.get(name, name): value for name, value in arrays.items()}
    symbols, numbers = per_atom.pop("symbols", None), per_atom.pop("numbers", None)
    if numbers is not None:
        numbers = numbers.astype(np.int64)
    elif symbols is not None:
        numbers = _numbers(symbols, k)
    else:
        raise FastPathUnavailable(f"frame {k}: no species or Z column")
    positions = per_atom.pop("positions", None)
    if positions is None or positions.shape != (n, 3):
        raise FastPathUnavailable(f"frame {k}: no positions of 3 columns")
    extra = {}
    for name, value in per_atom.items():
        (results if name in ALL_PROPERTIES else extra)[name] = value
    return LightAtoms(numbers, positions, cell, pbc, info, extra, results)
