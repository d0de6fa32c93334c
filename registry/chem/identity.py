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

The integer grid is int64: inputs whose grid values would not fit (positions or cell entries
beyond ±``MAX_COORDINATE`` Å, see :func:`coordinate_range_problem` and
:func:`slab_range_problem`) are refused by ``FrameBatch.validate`` before hashing, never cast.

Everything is vectorised over a ragged batch (``numbers``, ``positions``, ``offsets``).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HASH_VERSION = 1
TOLERANCE = 1e-4  # Å
# Bound on every integer grid value (coordinates and cell entries, in TOLERANCE steps).
# canonical_order subtracts the smallest grid x from the others, so the largest grid values
# must stay within half of int64's range for that difference not to wrap around.
GRID_LIMIT = 2 ** 61
# Bound on |position| and |cell entry| in Å (checked by :func:`grid_range_problem` before
# hashing). A molecule's centred coordinate is at most 2 * MAX_COORDINATE, 2e18 grid steps
# (< GRID_LIMIT); a cell vector is at most sqrt(3) * MAX_COORDINATE long, so the wrapped
# periodic grid (< length / TOLERANCE steps) also stays below GRID_LIMIT.
MAX_COORDINATE = 1e14
assert 2 * MAX_COORDINATE / TOLERANCE < GRID_LIMIT
assert 3 ** 0.5 * MAX_COORDINATE / TOLERANCE < GRID_LIMIT
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


_WHY = f"(the identity hash rounds to {TOLERANCE:g} Å on an int64 grid)"


def coordinate_range_problem(positions, offsets, cells) -> tuple[int, str] | None:
    """The first frame with a position or cell entry (finite, checked before) beyond
    ±``MAX_COORDINATE`` Å, as ``(frame index, message)``; None if there is none."""
    limit = f"±{MAX_COORDINATE:.0e}".replace("e+", "e")
    for arr, what, per_atom in ((positions, "positions", True), (cells, "cell vectors", False)):
        if not len(arr) or (arr.max() <= MAX_COORDINATE and -arr.min() <= MAX_COORDINATE):
            continue
        big = np.abs(arr).reshape(len(arr), -1).max(axis=1) > MAX_COORDINATE
        if big.any():
            row = int(np.argmax(big))
            frame = int(np.searchsorted(offsets, row, side="right") - 1) if per_atom else row
            worst = float(np.abs(arr[row]).max())
            return frame, f"{what} must be within {limit} Å {_WHY}; got {worst:.6g}"
    return None


def slab_range_problem(positions, offsets, cells, pbc) -> tuple[int, str] | None:
    """The first partly periodic frame (a slab or wire) whose grid along a non-periodic axis
    does not fit the hash's int64 grid, as ``(frame index, message)``, or None.

    There the grid value is the fractional coordinate times the axis length, which a nearly
    flat cell can make far larger than the position itself. Needs every frame to have atoms,
    coordinates within range (:func:`coordinate_range_problem`) and periodic cells
    invertible (checked before)."""
    partly = pbc.any(axis=1) & ~pbc.all(axis=1)
    if not partly.any():
        return None
    # Cheap bound first: |frac_k| * length_k <= |row k of inv(cell^T)| * |pos| * length_k.
    # Every frame has atoms, so reduceat gives each frame's own maximum.
    frames = np.flatnonzero(partly)
    reach = np.maximum.reduceat(np.linalg.norm(positions, axis=1), offsets[:-1])[frames]
    inv = np.linalg.inv(cells[frames].transpose(0, 2, 1))
    lengths = np.linalg.norm(cells[frames], axis=2)
    bound = np.linalg.norm(inv, axis=2) * lengths * reach[:, None] / TOLERANCE
    suspect = frames[((bound > GRID_LIMIT / 2) & ~pbc[frames]).any(axis=1)]
    for f in suspect.tolist():
        # The same arithmetic as canonical_grid, on this frame's atoms.
        pos = positions[offsets[f]:offsets[f + 1]]
        cell = np.broadcast_to(cells[f], (len(pos), 3, 3))
        frac = np.linalg.solve(cell.transpose(0, 2, 1), pos[..., None])[..., 0]
        length = np.linalg.norm(cells[f], axis=1)
        grid = np.abs(np.rint(frac * length / TOLERANCE))[:, ~pbc[f]]
        if (grid > GRID_LIMIT).any():
            reach_a = float(grid.max()) * TOLERANCE
            return f, (f"positions along a non-periodic cell axis must be within "
                       f"±{GRID_LIMIT * TOLERANCE:.2e} Å in cell coordinates {_WHY}; got "
                       f"{reach_a:.6g} Å (is the cell nearly flat?)")
    return None


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


def structure_hashes(numbers, positions, offsets, cells, pbc, charges, mults,
                     threads: int = 1):
    """Return (hashes, order): hex sha256 per structure and the canonical atom permutation.

    A large batch is cut into slices of ``_SLICE`` structures, hashed on ``threads`` threads
    (numpy releases the GIL for most of the work)."""
    b = len(offsets) - 1
    if b > _SLICE:
        offsets = np.asarray(offsets, dtype=np.int64)
        k_slices = -(-b // _SLICE)
        cuts = [b * k // k_slices for k in range(k_slices + 1)]

        def one(k):
            lo, hi = cuts[k], cuts[k + 1]
            a, z = offsets[lo], offsets[hi]
            return _structure_hashes(numbers[a:z], positions[a:z], offsets[lo:hi + 1] - a,
                                     cells[lo:hi], pbc[lo:hi], charges[lo:hi], mults[lo:hi])

        if threads <= 1:
            parts = [one(k) for k in range(k_slices)]
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="nnp-hash") as ex:
                parts = list(ex.map(one, range(k_slices)))
        hashes = [h for part, _ in parts for h in part]
        order = np.concatenate([o + offsets[cuts[k]] for k, (_, o) in enumerate(parts)])
        return hashes, order
    return _structure_hashes(numbers, positions, offsets, cells, pbc, charges, mults)


# Structures per slice: slices are hashed one after another on each thread, so their
# temporaries (a few MB) are reused from the allocator instead of faulting in fresh pages
# (one slice per thread spends a large share of its CPU on page faults).
_SLICE = 10_000


def _structure_hashes(numbers, positions, offsets, cells, pbc, charges, mults):
    """:func:`structure_hashes` of one slice.

    Messages are assembled with numpy, one block per (atom count, periodic) group of
    structures (equal-length messages side by side), then hashed from slices of it."""
    numbers = np.asarray(numbers, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    grid = canonical_grid(positions, offsets, cells, pbc)
    order = canonical_order(numbers, grid, offsets)
    cell_grid = np.rint(cells / TOLERANCE).astype("<i8").reshape(-1, 9)
    periodic = pbc.any(axis=1)
    b = len(offsets) - 1
    head = np.empty(b, dtype=_HEADER_DT)
    head["magic"] = b"nnp-st1\0"
    counts = np.diff(offsets)
    head["n"] = counts
    head["charge"] = charges
    head["mult"] = mults
    head["pbc"] = (pbc * np.array([1, 2, 4])).sum(axis=1)
    head_u8 = head.view(np.uint8).reshape(b, _HEADER_DT.itemsize)
    hashes: list[str | None] = [None] * b
    group = counts * 2 + periodic
    for key in np.unique(group).tolist():
        members = np.flatnonzero(group == key)
        n, per = key >> 1, bool(key & 1)
        atoms = order[offsets[members][:, None] + np.arange(n)]
        parts = [head_u8[members]]
        if per:
            parts.append(cell_grid[members].view(np.uint8))
        parts += [numbers[atoms].astype("<i2").view(np.uint8).reshape(len(members), 2 * n),
                  np.ascontiguousarray(grid[atoms], dtype="<i8").view(np.uint8)
                  .reshape(len(members), 24 * n)]
        for s, h in zip(members.tolist(), hash_rows(parts), strict=True):
            hashes[s] = h
    return hashes, order


def hash_rows(columns: list[np.ndarray]) -> list[str]:
    """Hex sha256 of each row of the uint8 blocks ``columns`` joined side by side (messages
    of one length; used for structure and label hashes)."""
    buf = memoryview(np.concatenate(columns, axis=1)).cast("B")
    m = len(columns[0])
    w = buf.nbytes // m
    sha = hashlib.sha256
    return [sha(buf[i: i + w]).hexdigest() for i in range(0, m * w, w)]
