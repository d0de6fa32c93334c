"""Near-duplicate search: the same structure up to rotation, translation, atom permutation
and a coordinate tolerance (RMSD in Å after the best alignment). A query; it changes nothing.

1. Fingerprint: the three singular values of a molecule's centred coordinates divided by
   √n (RMS extents along its principal axes). They are invariant to rotation, translation and
   permutation, and by Weyl's inequality each moves by at most the RMSD between two
   structures, so ``RMSD ≤ T`` implies fingerprints within ``T`` in every component.
2. Index: structures are grouped by exact composition, charge and multiplicity, then put in a
   grid of cell size ``T`` over the fingerprint; only pairs in the same or adjacent cells are
   candidates (no all-pairs comparison, and no true pair is missed by the filter).
3. Confirmation: from the 24 proper axis alignments of the two principal frames, alternate an
   optimal per-element assignment (Hungarian) and a Kabsch rotation; a pair is a duplicate
   when an alignment with RMSD ≤ T is found. Confirmed pairs are joined into clusters.

Periodic structures are not compared (reported as skipped).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

import numpy as np
from sqlalchemy import select

from ..errors import BadInput
from ..store.schema import Composition, Structure


def fingerprint(positions: np.ndarray) -> np.ndarray:
    """Descending singular values of the centred coordinates / √n (3 values, Å)."""
    x = positions - positions.mean(axis=0)
    sv = np.linalg.svd(x, compute_uv=False) / np.sqrt(len(x))
    return np.pad(sv, (0, 3 - len(sv)))


def _principal_axes(x: np.ndarray) -> np.ndarray:
    _, vecs = np.linalg.eigh(x.T @ x)
    return vecs[:, ::-1]


def _proper_frames() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[list(range(3)), list(perm)] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return out


_FRAMES = _proper_frames()


def kabsch(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Rotation R (det +1) minimising |b @ R - a| for centred b, a."""
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _assign(za, a, zb, y) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment  # heavy import: only when searching

    perm = np.empty(len(a), dtype=np.int64)
    for z in np.unique(za):
        ia, ib = np.flatnonzero(za == z), np.flatnonzero(zb == z)
        cost = ((a[ia, None, :] - y[None, ib, :]) ** 2).sum(-1)
        r, c = linear_sum_assignment(cost)
        perm[ia[r]] = ib[c]
    return perm


def aligned_rmsd(za, xa, zb, xb, stop_below: float = 0.0) -> float:
    """Smallest RMSD found over rotations, translations and per-element permutations."""
    if len(za) != len(zb) or not np.array_equal(np.sort(za), np.sort(zb)):
        return float("inf")
    a, b = xa - xa.mean(axis=0), xb - xb.mean(axis=0)
    pa, pb = _principal_axes(a), _principal_axes(b)
    best = float("inf")
    for frame in _FRAMES:
        rot = pb @ frame @ pa.T
        perm = None
        for _ in range(20):
            new = _assign(za, a, zb, b @ rot)
            if perm is not None and np.array_equal(new, perm):
                break
            perm = new
            rot = kabsch(b[perm], a)
        rmsd = float(np.sqrt(((b[perm] @ rot - a) ** 2).sum(axis=1).mean()))
        best = min(best, rmsd)
        if best <= stop_below:
            break
    return best


def candidate_pairs(keys: list, fps: np.ndarray, tolerance: float):
    """Pairs (i, j), i < j, with equal key and fingerprints in the same or adjacent cells."""
    cells = np.floor(fps / tolerance).astype(np.int64)
    grid: dict = defaultdict(list)
    for i, (k, c) in enumerate(zip(keys, map(tuple, cells), strict=True)):
        grid[(k, c)].append(i)
    offsets = list(itertools.product((-1, 0, 1), repeat=3))
    for (k, c), members in grid.items():
        for off in offsets:
            other = (k, (c[0] + off[0], c[1] + off[1], c[2] + off[2]))
            if other not in grid or other < (k, c):  # each cell pair once
                continue
            for i in members:
                for j in grid[other]:
                    if (other != (k, c) or i < j) and \
                            np.abs(fps[i] - fps[j]).max() <= tolerance:
                        yield (i, j) if i < j else (j, i)


def clusters_of(n: int, pairs) -> list[list[int]]:
    """Connected components (size > 1) of ``pairs`` over ``range(n)``."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[root(i)].append(i)
    return [g for g in groups.values() if len(g) > 1]


def check_tolerance(tolerance, what: str = "--tolerance") -> float:
    """``tolerance`` as a float > 0 (Å); BadInput naming the option ``what`` the user set
    (``--tolerance`` of ``nnp dedup``, ``--exclude-duplicates`` of ``nnp dataset create``)."""
    if isinstance(tolerance, bool):
        raise BadInput(f"{what} {tolerance!r} is not a number")
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise BadInput(f"{what} {tolerance!r} is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise BadInput(f"{what} must be > 0 Å (a distance), got {tolerance}")
    return value


def near_duplicates(reg, *, tolerance: float, filter: str | None = None,
                    structure_ids=None, what: str = "--tolerance") -> dict:
    """Clusters of near-duplicate molecules among those matching ``filter`` (or ids).
    ``what`` names the tolerance in error messages (the option the user typed)."""
    t0 = time.perf_counter()
    tolerance = check_tolerance(tolerance, what)
    q = select(Structure.id, Structure.hash, Structure.numbers, Structure.positions,
               Structure.nperiodic, Structure.charge, Structure.multiplicity,
               Composition.formula_hill).join(
        Composition, Composition.id == Structure.composition_id)
    with reg.session() as s:
        if filter is not None and str(filter).strip():
            from ..query import structure_filter

            q = q.where(structure_filter(filter, session=s))
        if structure_ids is not None:
            rows = []
            ids = list(structure_ids)
            for lo in range(0, len(ids), 5000):
                rows += s.execute(q.where(Structure.id.in_(ids[lo: lo + 5000]))).all()
        else:
            rows = s.execute(q).all()
    rows.sort(key=lambda r: r.hash)
    mols = [r for r in rows if r.nperiodic == 0]
    zs = [np.frombuffer(r.numbers, dtype=np.uint8) for r in mols]
    xs = [np.frombuffer(r.positions, dtype="<f8").reshape(-1, 3) for r in mols]
    fps = np.array([fingerprint(x) for x in xs]).reshape(-1, 3)
    keys = [(r.formula_hill, r.charge, r.multiplicity) for r in mols]
    n_cand, confirmed = 0, []
    for i, j in candidate_pairs(keys, fps, tolerance):
        n_cand += 1
        if aligned_rmsd(zs[i], xs[i], zs[j], xs[j], stop_below=tolerance) <= tolerance:
            confirmed.append((i, j))
    clusters = [{"structure_ids": [mols[i].id for i in c],
                 "hashes": [mols[i].hash for i in c], "formula": mols[c[0]].formula_hill}
                for c in clusters_of(len(mols), confirmed)]
    clusters.sort(key=lambda c: c["hashes"][0])
    return {"tolerance": tolerance, "n_structures": len(rows),
            "skipped_periodic": len(rows) - len(mols), "candidate_pairs": n_cand,
            "duplicate_pairs": len(confirmed), "clusters": clusters,
            "n_redundant": sum(len(c["structure_ids"]) - 1 for c in clusters),
            "seconds": round(time.perf_counter() - t0, 4)}
