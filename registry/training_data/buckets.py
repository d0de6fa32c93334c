"""Padding ragged atom arrays into size buckets (the layout of :mod:`.materialize`).

Each bucket holds the structures whose atom count pads to the same size (:func:`bucket_size`),
in structure-hash order. The atom arrays of all buckets live back to back in one block per
array (numbers, positions, forces); a bucket's arrays are views of its part of the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bucket_size(n: np.ndarray) -> np.ndarray:
    """Padded size per atom count: exact up to 8, then quarter-power-of-two steps."""
    n = np.asarray(n, dtype=np.int64)
    p = 2 ** np.floor(np.log2(np.maximum(n, 1))).astype(np.int64)
    step = np.maximum(p // 4, 1)
    return np.where(n <= 8, n, -(-n // step) * step)


def rows3(a):
    """(N, 3) view of a flat float array, or of each array of a list of them."""
    return [x.reshape(-1, 3) for x in a] if isinstance(a, list) else a.reshape(-1, 3)


def records(a: np.ndarray) -> np.ndarray:
    """1-d view of ``a`` with one opaque item per row (a row is then copied as one item)."""
    a = np.ascontiguousarray(a)
    return a.view(np.dtype((np.void, a.itemsize * int(np.prod(a.shape[1:]))))).reshape(-1)


def scatter(block: np.ndarray, dst: np.ndarray, values) -> None:
    """``block[dst] = values`` for an array or the concatenation of a list of arrays."""
    rows = records(block)
    at = 0
    for v in values if isinstance(values, list) else [values]:
        np.put(rows, dst[at: at + len(v)], records(v))
        at += len(v)


@dataclass
class Layout:
    """Where structures go in the blocks holding every bucket back to back (by bucket, then
    structure-hash order)."""

    s_order: np.ndarray  # structure indices in bucket order
    sizes: list[int]  # padded atom count of each bucket
    starts: np.ndarray  # (K+1,) bucket offsets into s_order
    block_start: np.ndarray  # (K+1,) bucket offsets into the blocks' rows
    base: np.ndarray  # (N,) block row of each structure's first atom
    total: int  # rows of the blocks


def layout(n_atoms: np.ndarray, order: np.ndarray) -> Layout:
    sizes = bucket_size(n_atoms)
    uniq = np.flatnonzero(np.bincount(sizes))  # padded sizes are small integers
    lut = np.zeros(int(uniq[-1]) + 1, dtype=np.int16)
    lut[uniq] = np.arange(len(uniq))
    s_bucket = lut[sizes]
    # by bucket, then hash (a stable sort of int16 keys is a radix sort)
    s_order = order[np.argsort(s_bucket[order], kind="stable")]
    counts_b = np.bincount(s_bucket, minlength=len(uniq))
    base = np.empty(len(n_atoms), dtype=np.int64)
    base[s_order] = np.concatenate([[0], np.cumsum(sizes[s_order])[:-1]])
    return Layout(s_order, uniq.tolist(), np.concatenate([[0], np.cumsum(counts_b)]),
                   np.concatenate([[0], np.cumsum(counts_b * uniq)]), base, int(sizes.sum()))


def new_blocks(total: int) -> dict[str, np.ndarray]:
    """Zeroed atom blocks (padding stays number 0, position and force 0)."""
    return {"numbers": np.zeros(total, dtype=np.uint8),
            "positions": np.zeros((total, 3), dtype=np.float64),
            "forces": np.zeros((total, 3), dtype=np.float64)}


PER_STRUCTURE = ("structure_id", "n_atoms", "split", "cell", "pbc", "energy")


def assemble(lay: Layout, per: dict[str, np.ndarray], blocks: dict) -> list[dict]:
    """The buckets: per-structure arrays (``per``, in structure order) and views of the
    atom blocks."""
    per = {k: v[lay.s_order] for k, v in per.items()}
    buckets = []
    for k, size in enumerate(lay.sizes):
        a, b = lay.starts[k], lay.starts[k + 1]
        lo, hi = lay.block_start[k], lay.block_start[k + 1]
        out = {name: per[name][a:b] for name in PER_STRUCTURE}
        out["numbers"] = blocks["numbers"][lo:hi].reshape(b - a, size)
        out["positions"] = blocks["positions"][lo:hi].reshape(b - a, size, 3)
        out["forces"] = blocks["forces"][lo:hi].reshape(b - a, size, 3)
        if "level_energy" in per:
            out["level_energy"] = per["level_energy"][a:b]
        buckets.append(out)
    return buckets


def bucketize(flat: dict) -> list[dict[str, np.ndarray]]:
    """Pad the ragged arrays of :func:`read_version` into buckets by :func:`bucket_size`.

    One scatter per array into a block holding every bucket back to back; the buckets are
    views of it (by bucket, then structure-hash order).
    """
    if flat.get("n") == 0:
        return []
    n_atoms, offsets = flat["n_atoms"], flat["offsets"]
    lay = layout(n_atoms, flat["order"])
    dst = np.repeat(lay.base - offsets[:-1], n_atoms) + np.arange(int(offsets[-1]))
    blocks = new_blocks(lay.total)
    for name, block in blocks.items():
        scatter(block, dst, flat[name])
    per = {k: flat[k] for k in PER_STRUCTURE}
    if flat["level_energy"].shape[1] > 1:
        per["level_energy"] = flat["level_energy"]
    return assemble(lay, per, blocks)

