"""Element symbols, compositions and chemical formulas (Hill, reduced, anonymous)."""

from __future__ import annotations

import string
from functools import lru_cache
from math import gcd

import numpy as np

from .errors import BadInput

MAX_Z = 118
# Symbols by atomic number (index 0 is the dummy 'X'), as in ase.data; kept here so that
# opening a registry does not import ASE.
SYMBOLS = (
    'X', 'H', 'He', 'Li', 'Be', 'B', 'C', 'N', 'O', 'F', 'Ne', 'Na', 'Mg', 'Al', 'Si', 'P', 'S',
    'Cl', 'Ar', 'K', 'Ca', 'Sc', 'Ti', 'V', 'Cr', 'Mn', 'Fe', 'Co', 'Ni', 'Cu', 'Zn', 'Ga', 'Ge',
    'As', 'Se', 'Br', 'Kr', 'Rb', 'Sr', 'Y', 'Zr', 'Nb', 'Mo', 'Tc', 'Ru', 'Rh', 'Pd', 'Ag', 'Cd',
    'In', 'Sn', 'Sb', 'Te', 'I', 'Xe', 'Cs', 'Ba', 'La', 'Ce', 'Pr', 'Nd', 'Pm', 'Sm', 'Eu', 'Gd',
    'Tb', 'Dy', 'Ho', 'Er', 'Tm', 'Yb', 'Lu', 'Hf', 'Ta', 'W', 'Re', 'Os', 'Ir', 'Pt', 'Au', 'Hg',
    'Tl', 'Pb', 'Bi', 'Po', 'At', 'Rn', 'Fr', 'Ra', 'Ac', 'Th', 'Pa', 'U', 'Np', 'Pu', 'Am', 'Cm',
    'Bk', 'Cf', 'Es', 'Fm', 'Md', 'No', 'Lr', 'Rf', 'Db', 'Sg', 'Bh', 'Hs', 'Mt', 'Ds', 'Rg',
    'Cn', 'Nh', 'Fl', 'Mc', 'Lv', 'Ts', 'Og',
)
atomic_numbers = {s: z for z, s in enumerate(SYMBOLS) if z}
chemical_symbols = SYMBOLS


def symbol_to_z(symbol: str) -> int:
    """Atomic number of ``symbol``; a clear error for unknown elements."""
    z = atomic_numbers.get(symbol)
    if not z:
        raise BadInput(f"unknown element {symbol!r}")
    return z


def compact_composition(numbers: np.ndarray, offsets: np.ndarray):
    """(zs, counts): the sorted atomic numbers present and a (B, len(zs)) int32 count matrix."""
    n_struct = len(offsets) - 1
    zs, col = np.unique(np.asarray(numbers, dtype=np.int64), return_inverse=True)
    owner = np.repeat(np.arange(n_struct), np.diff(offsets))
    k = max(len(zs), 1)
    flat = np.bincount(owner * k + col.reshape(-1), minlength=n_struct * k)
    return zs, flat.reshape(n_struct, k)[:, : len(zs)].astype(np.int32)


def composition_matrix(numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(B, MAX_Z+1) int32 matrix of element counts for a ragged batch."""
    zs, counts = compact_composition(numbers, offsets)
    out = np.zeros((len(counts), MAX_Z + 1), dtype=np.int32)
    out[:, zs] = counts
    return out


def _anonymous_names():
    letters = string.ascii_uppercase
    for a in letters:
        yield a
    for a in letters:
        for b in string.ascii_lowercase:
            yield a + b


_ANON = list(_anonymous_names())


def _fmt(symbol: str, count: int) -> str:
    return symbol if count == 1 else f"{symbol}{count}"


@lru_cache(maxsize=65536)
def formulas(composition: tuple[tuple[int, int], ...]) -> tuple[str, str, str]:
    """(hill, reduced, anonymous) formulas of a ((z, count), ...) composition."""
    counts = {SYMBOLS[z]: c for z, c in composition}
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else [])
        order += sorted(s for s in counts if s not in ("C", "H"))
    else:
        order = sorted(counts)
    hill = "".join(_fmt(s, counts[s]) for s in order)
    divisor = 0
    for c in counts.values():
        divisor = gcd(divisor, c)
    divisor = divisor or 1
    reduced = "".join(_fmt(s, counts[s] // divisor) for s in sorted(counts))
    anon_counts = sorted((c // divisor for c in counts.values()), reverse=True)
    anonymous = "".join(_fmt(_ANON[i], c) for i, c in enumerate(anon_counts))
    return hill, reduced, anonymous


def composition_of(row: np.ndarray) -> tuple[tuple[int, int], ...]:
    """((z, count), ...) for a row of :func:`composition_matrix`."""
    zs = np.flatnonzero(row)
    return tuple((int(z), int(row[z])) for z in zs)
