"""Structure identity hashing.

Algorithm version 1 (``HASH_VERSION``):

* Positions are rounded to ``TOLERANCE`` Å (integer grid ``rint(x / TOLERANCE)``).
* Molecules (no periodic axis): the centroid is subtracted first, so a rigid translation
  does not change the hash.
* Periodic structures: fractional coordinates along periodic axes are rounded on a grid of
  ``TOLERANCE`` Å and wrapped into [0, 1), so periodic images of an atom hash alike; the
  cell (rounded) is part of the hash.
* Atoms are put in canonical order (by atomic number, then rounded coordinates), so atom
  order does not matter. Nothing is done about rotation: mirror images and rotated copies
  get different hashes (near-duplicate search is a separate query).
* The hash is sha256 over a versioned header (n_atoms, charge, multiplicity, pbc, cell)
  followed by the sorted atomic numbers and integer coordinates, little-endian.

Everything is vectorised over a ragged batch (``numbers``, ``positions``, ``offsets``).
"""

from __future__ import annotations

import hashlib
from itertools import chain

import numpy as np

HASH_VERSION = 1
TOLERANCE = 1e-4  # Å
# Same bytes as struct "<8sIiiB": magic, n_atoms, charge, multiplicity, pbc bits.
_HEADER_DT = np.dtype([("magic", "S8"), ("n", "<u4"), ("charge", "<i4"), ("mult", "<i4"),
                       ("pbc", "u1")])


def canonical_grid(positions, offsets, cells, pbc) -> np.ndarray:
    """Integer coordinates (int64, shape (N, 3)) used for hashing and ordering."""
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    grid = np.empty(positions.shape, dtype=np.int64)
    periodic = pbc.any(axis=1)
    mol = ~periodic[owner]
    if mol.any():
        sums = np.stack(
            [np.bincount(owner, weights=positions[:, k], minlength=len(counts)) for k in range(3)],
            axis=1,
        )
        centroid = sums / np.maximum(counts, 1)[:, None]
        if mol.all():
            grid[:] = np.rint((positions - centroid[owner]) / TOLERANCE)
        else:
            grid[mol] = np.rint((positions[mol] - centroid[owner[mol]]) / TOLERANCE)
    atoms = np.flatnonzero(~mol)
    if len(atoms):
        # Fractional coordinates, one 3x3 solve per atom (same arithmetic as solving per
        # structure), rounded on a TOLERANCE grid along each lattice vector; wrapped along
        # periodic axes, plain Cartesian-length grid along the others.
        s = owner[atoms]
        frac = np.linalg.solve(cells[s].transpose(0, 2, 1), positions[atoms][..., None])[..., 0]
        lengths = np.linalg.norm(cells, axis=2)[s]
        steps = np.maximum(np.rint(lengths / TOLERANCE), 1)
        g = np.rint(frac * steps)
        grid[atoms] = np.where(pbc[s], np.mod(g, steps), np.rint(frac * lengths / TOLERANCE))
    return grid


def canonical_order(numbers, grid, offsets) -> np.ndarray:
    """Global permutation putting each structure's atoms in canonical order.

    Order: structure, atomic number, then rounded x, y, z. (structure, Z, x) is packed into
    one int64 when it fits, sorted once; only runs of equal keys are then sorted by y, z."""
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    if not len(owner):
        return owner
    x = grid[:, 0] - grid[:, 0].min()
    bits_x = int(x.max()).bit_length()
    bits_o = int(owner[-1]).bit_length()
    if bits_o + 7 + bits_x > 62 or int(numbers.max()) >= 128:
        return np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], numbers, owner))
    key = (owner << (7 + bits_x)) | (numbers.astype(np.int64) << bits_x) | x
    perm = np.argsort(key, kind="stable")
    sk = key[perm]
    tie = sk[1:] == sk[:-1]
    if tie.any():
        mask = np.zeros(len(perm), dtype=bool)
        mask[1:] |= tie
        mask[:-1] |= tie
        sub = perm[mask]
        perm[mask] = sub[np.lexsort((grid[sub, 2], grid[sub, 1], key[sub]))]
    return perm


def structure_hashes(numbers, positions, offsets, cells, pbc, charges, mults):
    """Return (hashes, order): hex sha256 per structure and the canonical atom permutation."""
    numbers = np.asarray(numbers, dtype=np.int64)
    grid = canonical_grid(positions, offsets, cells, pbc)
    order = canonical_order(numbers, grid, offsets)
    z_bytes = numbers[order].astype("<i2").tobytes()
    g_bytes = grid[order].astype("<i8").tobytes()
    cell_grid = np.rint(cells / TOLERANCE).astype("<i8")
    periodic = pbc.any(axis=1)
    pbc_bits = (pbc * np.array([1, 2, 4])).sum(axis=1)
    b = len(offsets) - 1
    head = np.empty(b, dtype=_HEADER_DT)
    head["magic"] = b"nnp-st1\0"
    head["n"] = np.diff(offsets)
    head["charge"] = charges
    head["mult"] = mults
    head["pbc"] = pbc_bits
    hb, hw = head.tobytes(), _HEADER_DT.itemsize
    cb = cell_grid.tobytes()
    per = periodic.tolist()
    lo = np.asarray(offsets[:-1], dtype=np.int64)
    hi = np.asarray(offsets[1:], dtype=np.int64)
    pieces = zip(
        [hb[i: i + hw] for i in range(0, b * hw, hw)],
        [cb[72 * s: 72 * s + 72] if per[s] else b"" for s in range(b)],
        [z_bytes[a: c] for a, c in zip((2 * lo).tolist(), (2 * hi).tolist(), strict=True)],
        [g_bytes[a: c] for a, c in zip((24 * lo).tolist(), (24 * hi).tolist(), strict=True)],
        strict=True)
    ends = np.cumsum(hw + 72 * periodic + 26 * (hi - lo)).tolist()
    buf = memoryview(b"".join(chain.from_iterable(pieces)))
    sha = hashlib.sha256
    hashes = [sha(buf[a: c]).hexdigest() for a, c in zip([0] + ends[:-1], ends, strict=True)]
    return hashes, order
