"""Exact nearest neighbours in feature space, by blocks of brute force (numpy only).

Atomic-environment vectors have hundreds of dimensions, where trees do no better than
brute force; candidates are ranked by ``|r|² − 2 q·r`` (``|q|²`` is the same along a row) in
float32 blocks (one BLAS product each, worked on in place; blocks of about 32 MB stay
cache-friendly for the selection, which costs more than the product in larger ones), and the
chosen neighbours' distances are then computed exactly in float64.
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 1 << 25


def nearest(query: np.ndarray, reference: np.ndarray, k: int = 1, *,
            exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (len(query), k), of the ``k`` nearest rows of ``reference``
    to every row of ``query``, nearest first. ``exclude_self``: ``query`` is ``reference``
    and a row is not its own neighbour (an identical other row still is, at distance 0)."""
    q = np.ascontiguousarray(query, dtype=np.float32)
    r = np.ascontiguousarray(reference, dtype=np.float32)
    n_ref = len(r) - (1 if exclude_self else 0)
    if k < 1 or k > n_ref:
        raise ValueError(f"k={k} neighbours asked among {n_ref} reference rows")
    rr = np.einsum("ij,ij->i", r, r)
    block = max(1, min(_BLOCK_BYTES // (4 * max(len(r), 1)),
                       _BLOCK_BYTES // (8 * k * max(r.shape[1], 1))))
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.float64)
    for lo in range(0, len(q), block):
        qb = q[lo:lo + block]
        d2 = qb @ r.T
        d2 *= -2.0
        d2 += rr
        rows = np.arange(len(qb))
        if exclude_self:
            d2[rows, lo + rows] = np.inf
        if k >= d2.shape[1]:
            part = np.tile(np.arange(d2.shape[1]), (len(qb), 1))
        elif k <= 2:  # one or two passes of argmin beat a partition of every row
            part = np.empty((len(qb), k), dtype=np.int64)
            for j in range(k):
                part[:, j] = np.argmin(d2, axis=1)
                d2[rows, part[:, j]] = np.inf
        else:
            part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        exact = np.sqrt(((query[lo:lo + block, None, :].astype(np.float64)
                          - reference[part].astype(np.float64)) ** 2).sum(axis=2))
        order = np.argsort(exact, axis=1, kind="stable")
        idx[lo:lo + block] = np.take_along_axis(part, order, axis=1)
        dist[lo:lo + block] = np.take_along_axis(exact, order, axis=1)
    return idx, dist
