"""Diversity numbers of sets of atomic environments, computed in feature space.

The 2-D map distorts distances, so every number here is computed on the feature vectors
themselves (Euclidean distance), per element, at one resolution ``r`` (docs/diversity.md):

- ``r`` = :data:`RADIUS_FRACTION` × the median pairwise distance of the *reference* set
  (on a seeded subsample of :data:`PAIR_POINTS`): a property of the chemistry, not of the
  sample size. Two environments closer than ``r`` count as the same kind of environment;
- **coverage** of a reference set R by an analysed set A: the fraction of R's environments
  whose nearest environment in A is at most ``r`` away;
- **mean nearest-neighbour distance** of A: the mean over A of the distance to its nearest
  other environment of A (0 for exact repeats);
- **effective environments** of A: the Vendi score (Friedman & Dieng, 2023) with the
  Gaussian kernel ``k(x, y) = exp(−|x − y|² / 2r²)``: ``exp(−Σ λᵢ log λᵢ)`` over the
  eigenvalues λ of K/n. It is 1 for n copies of one environment and n for n environments
  farther apart than a few ``r``: the number of distinct kinds of environment at resolution
  ``r``, weighted by how evenly they are populated;
- **novel fraction** of new environments N over earlier ones E: the fraction of N farther
  than ``r`` from every environment of E (1 − coverage of N by E).

Coverage, novel fraction and the nearest-neighbour distance are averages over environments:
they are estimated on a seeded subsample of at most :data:`QUERY_POINTS` of them, each looked
up exactly among *all* environments of the other set. The Vendi score (an n × n eigenproblem)
is computed on a seeded subsample of at most :data:`VENDI_POINTS`.
"""

from __future__ import annotations

import numpy as np

from .neighbors import nearest

RADIUS_FRACTION = 0.25
PAIR_POINTS = 2000
QUERY_POINTS = 2000
VENDI_POINTS = 1000


def subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x``, or ``n`` of its rows drawn without replacement (order kept)."""
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), n, replace=False))]


def _pair_d2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)


def resolution(reference: np.ndarray, rng: np.random.Generator) -> float:
    """The resolution ``r``: :data:`RADIUS_FRACTION` × the median pairwise distance."""
    x = subsample(reference, PAIR_POINTS, rng)
    if len(x) < 2:
        return 0.0
    d2 = _pair_d2(x)
    upper = d2[np.triu_indices(len(x), k=1)]
    return float(RADIUS_FRACTION * np.sqrt(np.median(upper)))


def coverage(reference: np.ndarray, analysed: np.ndarray, radius: float,
             rng: np.random.Generator) -> float | None:
    """Fraction of ``reference`` within ``radius`` of ``analysed`` (None if either is empty)."""
    if not len(reference) or not len(analysed):
        return None
    _, d = nearest(subsample(reference, QUERY_POINTS, rng), analysed)
    return float((d[:, 0] <= radius).mean())


def mean_nn_distance(analysed: np.ndarray, rng: np.random.Generator) -> float | None:
    """Mean distance to the nearest other environment (None below two environments)."""
    if len(analysed) < 2:
        return None
    pick = np.arange(len(analysed)) if len(analysed) <= QUERY_POINTS else \
        np.sort(rng.choice(len(analysed), QUERY_POINTS, replace=False))
    idx, d = nearest(analysed[pick], analysed, 2)
    # a row's nearest row is itself, unless an identical row comes first (distance 0 then)
    return float(np.where(idx[:, 0] == pick, d[:, 1], d[:, 0]).mean())


def effective_environments(analysed: np.ndarray, radius: float,
                           rng: np.random.Generator) -> float | None:
    """The Vendi score of ``analysed`` with a Gaussian kernel of width ``radius``."""
    x = subsample(analysed, VENDI_POINTS, rng)
    if not len(x):
        return None
    d2 = _pair_d2(x)
    k = np.exp(-d2 / (2.0 * radius**2)) if radius > 0 else (d2 <= 0).astype(np.float64)
    lam = np.linalg.eigvalsh(k / len(x))
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()  # K/n has unit trace; renormalise away round-off
    return float(np.exp(-(lam * np.log(lam)).sum()))


def set_numbers(analysed: np.ndarray, reference: np.ndarray | None, radius: float,
                rng: np.random.Generator) -> dict:
    """``coverage`` (of ``reference``), ``mean_nn_distance`` and ``effective_environments``
    of ``analysed``, and ``n_sampled`` (its number of vectors). ``reference`` None: the
    analysed set is its own reference, which it covers entirely (every environment is its
    own nearest, at distance 0), so no search is made."""
    if reference is None:
        covered = 1.0 if len(analysed) else None
    else:
        covered = coverage(reference, analysed, radius, rng)
    return {"n_sampled": int(len(analysed)), "coverage": covered,
            "mean_nn_distance": mean_nn_distance(analysed, rng),
            "effective_environments": effective_environments(analysed, radius, rng)}


def novel_fraction(new: np.ndarray, earlier: np.ndarray, radius: float,
                   rng: np.random.Generator) -> float | None:
    """Fraction of ``new`` farther than ``radius`` from all of ``earlier`` (None if there is
    nothing earlier or nothing new)."""
    covered = coverage(new, earlier, radius, rng)
    return None if covered is None else 1.0 - covered
