"""Stratified sampling of atomic environments (one element's, when there are too many).

Rows are grouped into strata (dataset version × AL iteration × split, :func:`strata`); a
sample of ``n`` gives every non-empty stratum one row first (so a small iteration still shows
on the map), then shares the rest in proportion to the strata's sizes (largest remainders),
and draws each stratum's rows at random with the caller's seeded generator.
"""

from __future__ import annotations

import numpy as np


def strata(*codes: np.ndarray) -> np.ndarray:
    """One integer per row naming the combination of its ``codes`` (equal-length arrays)."""
    if not codes or not len(codes[0]):
        return np.zeros(len(codes[0]) if codes else 0, dtype=np.int64)
    _, inverse = np.unique(np.stack([np.asarray(c, dtype=np.int64) for c in codes]),
                           axis=1, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Rows to draw from each stratum of ``counts`` rows, ``n`` in all (at most the total)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if n >= total:
        return counts.copy()
    if n < len(counts):  # fewer rows than strata: the largest strata get one each
        out = np.zeros_like(counts)
        out[np.argsort(-counts, kind="stable")[:n]] = 1
        return out
    out = np.ones_like(counts)
    rest, spare = n - len(counts), counts - 1
    share = spare * (rest / spare.sum())
    out += np.floor(share).astype(np.int64)
    left = n - int(out.sum())
    if left:
        frac = np.where(out < counts, share - np.floor(share), -1.0)
        out[np.argsort(-frac, kind="stable")[:left]] += 1
    return out


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``n`` rows drawn by stratum (``labels``: one per row)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = allocate(counts, n)
    order = rng.permutation(len(labels))
    order = order[np.argsort(inverse[order], kind="stable")]  # by stratum, shuffled within
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = [order[s:s + t] for s, t in zip(starts, take, strict=True) if t]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
