"""Element symbols, compositions and chemical formulas (Hill, reduced, anonymous).

numpy is imported inside the array functions: queries and the CLI's quick commands use only
the symbol tables, and a cold ``nnp query --count`` should not pay for numpy.
"""

from __future__ import annotations

import string
from functools import lru_cache
from math import gcd
from typing import TYPE_CHECKING

from ..errors import BadInput

if TYPE_CHECKING:
    import numpy as np

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


def element_mask(zs) -> tuple[int, int]:
    """The element-set bit masks of the atomic numbers ``zs`` (``element_sets.mask_lo``,
    ``mask_hi``): bit z-1 of the first for Z 1-63, bit z-64 of the second for Z 64-126."""
    zs = set(zs)
    return (sum(1 << (z - 1) for z in zs if z < 64), sum(1 << (z - 64) for z in zs if z >= 64))


def element_masks(zs, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`element_mask` of the elements present in each row of ``counts`` (columns:
    atomic numbers ``zs``), as two int64 arrays."""
    import numpy as np

    zs = np.asarray(zs, dtype=np.int64)
    present = np.asarray(counts) > 0
    bits = np.where(zs < 64, np.left_shift(1, np.maximum(zs - 1, 0)),
                    np.left_shift(1, np.maximum(zs - 64, 0))).astype(np.int64)
    lo = (present[:, zs < 64] * bits[zs < 64]).sum(axis=1, dtype=np.int64)
    hi = (present[:, zs >= 64] * bits[zs >= 64]).sum(axis=1, dtype=np.int64)
    return lo, hi


def compact_composition(numbers: np.ndarray, offsets: np.ndarray):
    """(zs, counts): the sorted atomic numbers present and a (B, len(zs)) int32 count matrix."""
    import numpy as np

    n_struct = len(offsets) - 1
    numbers = np.asarray(numbers)
    offsets = np.asarray(offsets, dtype=np.int64)
    # atomic numbers are small: a presence table instead of a sort (np.unique)
    seen = np.bincount(numbers, minlength=1) if len(numbers) else np.zeros(1, dtype=np.int64)
    zs = np.flatnonzero(seen)
    if len(zs) <= _FEW_ELEMENTS:
        # per element, a running count read at the structure boundaries: a few small passes
        # instead of atom-sized int64 temporaries (fresh memory is what costs here)
        out = np.empty((n_struct, len(zs)), dtype=np.int32)
        running = np.zeros(len(numbers) + 1, dtype=np.int32)
        for k, z in enumerate(zs.tolist()):
            np.cumsum(numbers == z, out=running[1:])
            out[:, k] = running[offsets[1:]] - running[offsets[:-1]]
        return zs, out
    lut = np.zeros(len(seen), dtype=np.int64)
    lut[zs] = np.arange(len(zs))
    col = lut[numbers]
    owner = np.repeat(np.arange(n_struct), np.diff(offsets))
    k = max(len(zs), 1)
    flat = np.bincount(owner * k + col.reshape(-1), minlength=n_struct * k)
    return zs, flat.reshape(n_struct, k)[:, : len(zs)].astype(np.int32)


_FEW_ELEMENTS = 8  # up to this many distinct elements, per-element passes


def composition_matrix(numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(B, MAX_Z+1) int32 matrix of element counts for a ragged batch."""
    import numpy as np

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


_SMALL = 512  # counts below this come from a per-label table of strings


@lru_cache(maxsize=512)
def _piece_table(label: str) -> np.ndarray:
    import numpy as np

    return np.array(["", label] + [f"{label}{c}" for c in range(2, _SMALL)])


def _pieces(labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``label`` + count per cell ("" for 0, the bare label for 1), column by column."""
    import numpy as np

    cols = []
    for j, label in enumerate(labels.tolist()):
        c = counts[:, j]
        if c.max(initial=0) < _SMALL:
            cols.append(_piece_table(label)[c])
        else:
            cols.append(np.array(["" if x == 0 else label if x == 1 else f"{label}{x}"
                                  for x in c.tolist()]))
    return cols


def _join_columns(cols: list[np.ndarray], m: int) -> np.ndarray:
    import numpy as np

    out = cols[0] if cols else np.full(m, "")
    for col in cols[1:]:
        out = np.char.add(out, col)
    return out


def formulas_batch(zs: np.ndarray, comp: np.ndarray) -> tuple[list, list, list]:
    """(hill, reduced, anonymous) formula lists for the rows of a compact composition
    matrix (columns are the atomic numbers ``zs``): :func:`formulas`, vectorised."""
    import numpy as np

    comp = np.asarray(comp, dtype=np.int64)
    m, k = comp.shape
    if not m:
        return [], [], []
    symbols = np.array([SYMBOLS[z] for z in np.asarray(zs).tolist()] or [""])[:k]
    alpha = np.argsort(symbols, kind="stable")
    # Hill: C then H then the rest alphabetically when carbon is present; else alphabetical.
    first = [int(np.flatnonzero(symbols == s)[0]) for s in ("C", "H") if s in symbols]
    hill_order = np.array(first + [j for j in alpha.tolist() if j not in first], dtype=np.int64)
    by_alpha = _join_columns(_pieces(symbols[alpha], comp[:, alpha]), m)
    hill = by_alpha
    if "C" in symbols:
        with_c = comp[:, first[0]] > 0
        by_hill = _join_columns(_pieces(symbols[hill_order], comp[:, hill_order]), m)
        hill = np.where(with_c, by_hill, by_alpha)
    divisor = np.maximum(np.gcd.reduce(comp, axis=1), 1)[:, None]
    red = comp // divisor
    reduced = _join_columns(_pieces(symbols[alpha], red[:, alpha]), m)
    anon_counts = -np.sort(-red, axis=1)
    anonymous = _join_columns(_pieces(np.array(_ANON[:k] or [""])[:k], anon_counts), m)
    return hill.tolist(), reduced.tolist(), anonymous.tolist()


def composition_of(row: np.ndarray) -> tuple[tuple[int, int], ...]:
    """((z, count), ...) for a row of :func:`composition_matrix`."""
    import numpy as np

    zs = np.flatnonzero(row)
    return tuple((int(z), int(row[z])) for z in zs)
