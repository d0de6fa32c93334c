"""The compositions of a set of structures: their distinct element-count vectors and
formulas, planned with numpy alone (reader processes use it without the database)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..chem.elements import compact_composition, formulas_batch


@dataclass
class Compositions:
    """Distinct compositions of a set of structures."""

    zs: np.ndarray  # (Z,) atomic numbers: the columns of ``counts``
    counts: np.ndarray  # (U, Z) int32, one row per distinct composition
    of: np.ndarray  # (K,) row of ``counts`` for each structure
    hill: list[str]
    reduced: list[str]
    anonymous: list[str]
    ids: np.ndarray | None = None  # (U,) database ids, once committed

    def __len__(self) -> int:
        return len(self.hill)


def _distinct_rows(comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, row index of each input row) of a small-integer matrix. Rows are
    encoded as one mixed-radix int64 when that fits (a 1-D unique is far cheaper than a row
    unique), else compared as rows."""
    radix = comp.max(axis=0).astype(np.float64) + 1 if len(comp) else np.ones(comp.shape[1])
    if np.prod(radix) < 2.0 ** 62:
        weights = np.cumprod(np.concatenate([[1], radix[:-1]])).astype(np.int64)
        keys, inverse = np.unique(comp.astype(np.int64) @ weights, return_inverse=True)
        rows = (keys[:, None] // weights[None, :]) % radix.astype(np.int64)[None, :]
        return rows.astype(np.int32), inverse.reshape(-1)
    rows, inverse = np.unique(comp, axis=0, return_inverse=True)
    return rows.astype(np.int32), inverse.reshape(-1)


def plan_compositions(numbers: np.ndarray, offsets: np.ndarray,
                      frames: np.ndarray | None = None) -> Compositions:
    """Compositions of ``frames`` (indices into the ragged ``numbers`` / ``offsets``; default
    all frames)."""
    zs, comp = compact_composition(numbers, offsets)
    rows, of = _distinct_rows(comp if frames is None else comp[frames])
    hill, reduced, anonymous = formulas_batch(zs, rows)
    return Compositions(zs, rows, of, hill, reduced, anonymous)


def merge_compositions(parts: list[tuple[np.ndarray, np.ndarray]]) -> Compositions:
    """The distinct compositions of several sets, each given as (``zs``, ``counts``) of a
    :class:`Compositions` (``of`` then maps each input row, in order, to its composition)."""
    zs = np.unique(np.concatenate([z for z, _ in parts]))
    rows = []
    for z, counts in parts:
        full = np.zeros((len(counts), len(zs)), dtype=np.int32)
        full[:, np.searchsorted(zs, z)] = counts
        rows.append(full)
    distinct, of = _distinct_rows(np.concatenate(rows))
    hill, reduced, anonymous = formulas_batch(zs, distinct)
    return Compositions(zs, distinct, of, hill, reduced, anonymous)
