"""Exact nearest neighbours in feature space, by blocks of brute force.

Atomic-environment vectors have hundreds of dimensions, where trees do no better than
brute force; candidates are ranked by ``|r|² − 2 q·r`` (``|q|²`` is the same along a row) in
float32 blocks of about 32 MB (one BLAS product each, into one buffer reused for every block:
fresh blocks of that size would each be a new mapping, page-faulted anew), the ``k`` best of
each row picked by ``torch.topk`` (several times faster than numpy's ``argpartition`` on such
rows), and the chosen neighbours' distances then computed exactly in float64.
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 1 << 25


def nearest(query: np.ndarray, reference: np.ndarray, k: int = 1, *,
            exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (len(query), k), of the ``k`` nearest rows of ``reference``
    to every row of ``query``, nearest first. ``exclude_self``: ``query`` is ``reference``
    and a row is not its own neighbour (an identical other row still is, at distance 0)."""
    import torch

    n_ref = len(reference) - (1 if exclude_self else 0)
    if k < 1 or k > n_ref:
        raise ValueError(f"k={k} neighbours asked among {n_ref} reference rows")
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    r = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    rr = (r * r).sum(dim=1)
    block = max(1, min(len(q), _BLOCK_BYTES // (4 * max(len(r), 1)),
                       _BLOCK_BYTES // (8 * k * max(r.shape[1], 1))))
    buf = torch.empty((block, len(r)), dtype=torch.float32)
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k), dtype=np.float64)
    q64 = np.asarray(query, dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, len(q), block):
            qb = q[lo:lo + block]
            d2 = buf[:len(qb)]
            torch.mm(qb, r.T, out=d2)
            d2.mul_(-2.0).add_(rr)
            if exclude_self:
                rows = torch.arange(len(qb))
                d2[rows, lo + rows] = float("inf")
            part = torch.topk(d2, k, dim=1, largest=False, sorted=False).indices.numpy()
            exact = np.sqrt(((q64[lo:lo + block, None, :]
                              - reference[part].astype(np.float64)) ** 2).sum(axis=2))
            # ties (equal rows) resolve to the lower index, as a stable sort of all would
            order = np.lexsort((part, exact), axis=1) if k > 1 else np.zeros_like(part)
            idx[lo:lo + block] = np.take_along_axis(part, order, axis=1)
            dist[lo:lo + block] = np.take_along_axis(exact, order, axis=1)
    return idx, dist
