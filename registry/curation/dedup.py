"""Near-duplicate search: the same structure up to rotation, translation, atom permutation
and a coordinate tolerance (RMSD in Å after the best alignment). A query; it changes nothing.

1. Fingerprint: the three singular values of a molecule's centred coordinates divided by
   √n (RMS extents along its principal axes). They are invariant to rotation, translation and
   permutation, and by Weyl's inequality each moves by at most the RMSD between two
   structures, so ``RMSD ≤ T`` implies fingerprints within ``T`` in every component.
2. Index: structures are grouped by exact composition, charge and multiplicity and sorted by
   the first fingerprint component; a structure meets only those within ``T`` above it, and a
   pair is a candidate when all three components are within ``T`` (no all-pairs comparison,
   and no true pair is missed by the filter).
3. Cheap rejection: the distances of the atoms from their centroid, sorted per element. For
   any alignment that maps centroid onto centroid, each atom's distance changes by at most its
   displacement, and sorted lists pair up at least as closely as any permutation does, so
   the RMS difference of these sorted lists is a lower bound of the RMSD: a candidate pair
   whose bound exceeds ``T`` cannot be a duplicate and is dropped without an alignment.
4. Confirmation: from the 24 proper axis alignments of the two principal frames, alternate an
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
    return fingerprints([positions])[0]


def fingerprints(xs: list[np.ndarray]) -> np.ndarray:
    """:func:`fingerprint` of many structures, (m, 3): one batched SVD per atom count."""
    out = np.zeros((len(xs), 3))
    by_n: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(xs):
        by_n[len(x)].append(i)
    for n, idx in by_n.items():
        if n == 0:
            continue
        x = np.stack([xs[i] for i in idx])
        x = x - x.mean(axis=1, keepdims=True)
        sv = np.linalg.svd(x, compute_uv=False) / np.sqrt(n)
        out[idx, :sv.shape[1]] = sv
    return out


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


def radial_signature(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Distances of the atoms from the centroid, sorted by (element, distance)."""
    r = np.linalg.norm(positions - positions.mean(axis=0), axis=1)
    return r[np.lexsort((r, numbers))]


def rmsd_lower_bound(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """A lower bound of the aligned RMSD of two structures of one composition (see step 3)."""
    return float(np.sqrt(((sig_a - sig_b) ** 2).mean()))


def confirm_pairs(zs, xs, pairs, tolerance: float, prefilter: bool = True) -> dict:
    """The duplicate pairs among candidate ``pairs`` (indices into ``zs``/``xs``); a plain
    function of arrays, so a Dask task can run it on a share of the pairs."""
    sigs: dict[int, np.ndarray] = {}

    def sig(i):
        if i not in sigs:
            sigs[i] = radial_signature(zs[i], xs[i])
        return sigs[i]

    confirmed, rejected = [], 0
    for i, j in pairs:
        if prefilter and rmsd_lower_bound(sig(i), sig(j)) > tolerance:
            rejected += 1
            continue
        if aligned_rmsd(zs[i], xs[i], zs[j], xs[j], stop_below=tolerance) <= tolerance:
            confirmed.append((i, j))
    return {"pairs": confirmed, "candidates": len(pairs), "prefiltered": rejected}


def candidate_pairs(keys: list, fps: np.ndarray, tolerance: float):
    """Pairs (i, j), i < j, with equal key and fingerprints within ``tolerance`` in every
    component. Per key, the structures are sorted by the first component and each meets
    only those within ``tolerance`` above it (a sliding window, not all pairs)."""
    groups: dict = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        idx = np.asarray(members)
        idx = idx[np.argsort(fps[idx, 0], kind="stable")]
        f = fps[idx]
        hi = np.searchsorted(f[:, 0], f[:, 0] + tolerance, side="right")
        n_next = hi - np.arange(len(idx)) - 1
        if not n_next.any():
            continue
        a = np.repeat(np.arange(len(idx)), n_next)
        b = a + 1 + (np.arange(len(a)) - np.repeat(np.cumsum(n_next) - n_next, n_next))
        near = np.abs(f[a] - f[b]).max(axis=1) <= tolerance
        i, j = idx[a[near]], idx[b[near]]
        yield from zip(np.minimum(i, j).tolist(), np.maximum(i, j).tolist(), strict=True)


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


def _confirm_share(zs, xs, pairs, tolerance, prefilter, used) -> dict:
    """:func:`confirm_pairs` on one share, with pairs mapped back to the caller's indices."""
    out = confirm_pairs(zs, xs, pairs, tolerance, prefilter)
    out["pairs"] = [(used[i], used[j]) for i, j in out["pairs"]]
    return out


def _shares(groups: list[list], n: int) -> list[list]:
    """``groups`` (pair lists, one per composition) dealt into at most ``n`` shares of about
    equal size, a composition never split; largest first, each to the smallest share."""
    shares: list[list] = [[] for _ in range(min(n, len(groups)) or 1)]
    for g in sorted(groups, key=len, reverse=True):
        min(shares, key=len).extend(g)
    return [s for s in shares if s] or [[]]


def _serial(fn, chunks):
    return [fn(*c) for c in chunks]


def near_duplicates(reg, *, tolerance: float, filter: str | None = None,
                    structure_ids=None, what: str = "--tolerance", prefilter: bool = True,
                    mapper=None, chunks: int = 1) -> dict:
    """Clusters of near-duplicate molecules among those matching ``filter`` (or ids).
    ``what`` names the tolerance in error messages (the option the user typed).

    The candidate pairs are confirmed in ``chunks`` shares, cut at composition boundaries,
    by ``mapper(confirm_pairs, [(zs, xs, pairs, tolerance, prefilter), ...])`` (default: one
    after the other here; ``pipelines`` passes one that runs them as Dask tasks)."""
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
    fps = fingerprints(xs)
    keys = [(r.formula_hill, r.charge, r.multiplicity) for r in mols]
    by_key: dict = defaultdict(list)
    for i, j in candidate_pairs(keys, fps, tolerance):
        by_key[keys[i]].append((i, j))
    shares = _shares(list(by_key.values()), max(1, int(chunks)))
    work = []
    for pairs in shares:  # each task gets only the molecules its pairs use
        used = sorted({k for p in pairs for k in p})
        local = {g: n for n, g in enumerate(used)}
        work.append(([zs[g] for g in used], [xs[g] for g in used],
                     [(local[i], local[j]) for i, j in pairs], tolerance, prefilter, used))
    results = (mapper or _serial)(_confirm_share, work)
    confirmed = [p for r in results for p in r["pairs"]]
    n_cand = sum(r["candidates"] for r in results)
    clusters = [{"structure_ids": [mols[i].id for i in c],
                 "hashes": [mols[i].hash for i in c], "formula": mols[c[0]].formula_hill}
                for c in clusters_of(len(mols), confirmed)]
    clusters.sort(key=lambda c: c["hashes"][0])
    return {"tolerance": tolerance, "n_structures": len(rows),
            "skipped_periodic": len(rows) - len(mols), "candidate_pairs": n_cand,
            "prefiltered_pairs": sum(r["prefiltered"] for r in results),
            "duplicate_pairs": len(confirmed), "clusters": clusters,
            "n_redundant": sum(len(c["structure_ids"]) - 1 for c in clusters),
            "seconds": round(time.perf_counter() - t0, 4)}
