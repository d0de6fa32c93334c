"""t-SNE maps with openTSNE: a full fit, and new points embedded into a stored map.

:func:`fit_map` is ``openTSNE.TSNE(perplexity, random_state=seed, n_jobs).fit(X)`` with every
other setting at openTSNE's defaults (PCA initialisation, approximate neighbours and the
FFT-accelerated gradient for large sets), fitted with the points in :func:`locality_order`
and returned in the caller's order: openTSNE's time depends on how the points lie in memory
(neighbour lists, interpolation boxes), not only on how many there are
(docs/decisions/0014-fit-point-order.md). :func:`extend_map` places new points into an existing
map with openTSNE's ``TSNEEmbedding.transform`` (100 iterations; the reference points stay
where they are, up to the centring openTSNE applies), so AL iterations are comparable on one
map.

A stored map keeps its coordinates and feature vectors, not openTSNE's objects (nothing is
pickled). ``transform`` needs only the affinities of the *new* points to the reference ones,
so :class:`ReferenceAffinities` gives openTSNE exactly that: the new points' exact nearest
reference neighbours (:mod:`.neighbors`) turned into point-wise affinities by openTSNE's own
``joint_probabilities_nn``, without rebuilding the reference set's neighbour graph.
"""

from __future__ import annotations

import numpy as np

from registry.errors import BadInput

from .neighbors import nearest

CALLBACK_EVERY = 50  # iterations between progress reports
# openTSNE's transform runs 250 iterations; 100 kept the new points' neighbourhoods as well
# and take 40 % of the time (docs/decisions/0012-transform-iterations.md)
TRANSFORM_ITERATIONS = 100
# openTSNE's own rule for a fit (the FFT-interpolated gradient from 10,000 points, Barnes-Hut
# below), applied to the map's size: its transform applies it to the count of *new* points,
# and Barnes-Hut against a large map costs 1.7-2.6x more (docs/decisions/0013-transform-gradient.md)
FFT_FROM = 10_000


def check_perplexity(perplexity: float, n: int, what: str) -> None:
    """:class:`BadInput` unless ``n`` points suffice for ``perplexity`` (openTSNE needs more
    than 3 × perplexity)."""
    if n <= 3 * perplexity:
        raise BadInput(f"{what}: {n} environments are too few for perplexity {perplexity:g} "
                       f"(openTSNE needs more than 3 × perplexity = {3 * perplexity:g}); "
                       f"lower --perplexity or analyse more data")


def locality_order(x: np.ndarray, bits: int = 10) -> np.ndarray:
    """A permutation of the rows of ``x`` that puts points close on its two leading principal
    axes (openTSNE's initial map) next to each other: their Z-order (Morton) code on a
    ``2**bits`` grid. The axes come from every k-th row (at most 2,000), so no randomness."""
    x = np.asarray(x)
    n = len(x)
    if n < 3 or x.ndim != 2 or x.shape[1] == 0:
        return np.arange(n)
    step = -(-n // 2000)  # ceil: at most 2,000 rows
    probe = np.asarray(x[::step], dtype=np.float64)
    centre = probe.mean(axis=0)
    _, _, vt = np.linalg.svd(probe - centre, full_matrices=False)
    proj = (x @ vt[:2].T.astype(x.dtype, copy=False)).astype(np.float64)
    lo, span = proj.min(axis=0), np.ptp(proj, axis=0)
    span[span <= 0] = 1.0
    cells = ((proj - lo) / span * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(n, dtype=np.uint64)
    for b in range(bits):  # the first axis's bit is the more significant of each pair
        for d in range(cells.shape[1]):
            shift = np.uint64(2 * b + cells.shape[1] - 1 - d)
            code |= ((cells[:, d] >> np.uint64(b)) & np.uint64(1)) << shift
    return np.argsort(code, kind="stable")


def fit_map(features: np.ndarray, perplexity: float, seed: int, *, n_jobs: int = 1,
            on_iteration=None) -> np.ndarray:
    """(n, 2) t-SNE coordinates of ``features``. ``on_iteration(done, total)`` is called every
    50 iterations (it makes openTSNE evaluate the KL divergence then, so it costs a little)."""
    from openTSNE import TSNE

    kw = {}
    if on_iteration is not None:
        calls = [0]

        def callback(iteration, error, embedding):
            calls[0] += 1
            total = tsne.early_exaggeration_iter + tsne.n_iter
            on_iteration(min(calls[0] * CALLBACK_EVERY, total), total)

        kw = {"callbacks": callback, "callbacks_every_iters": CALLBACK_EVERY}
    tsne = TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs, **kw)
    x = np.asarray(features, dtype=np.float32)
    order = locality_order(x)
    coords = np.empty((len(x), 2), dtype=np.float64)
    coords[order] = np.asarray(tsne.fit(np.ascontiguousarray(x[order])), dtype=np.float64)
    return coords


def reference_affinities(reference: np.ndarray, n_jobs: int = 1):
    """An ``openTSNE.affinity.Affinities`` that knows only how new points relate to
    ``reference`` (see the module docstring)."""
    import scipy.sparse
    from openTSNE.affinity import Affinities, joint_probabilities_nn

    class ReferenceAffinities(Affinities):
        def __init__(self):
            super().__init__()
            self.reference = np.asarray(reference, dtype=np.float32)
            n = len(self.reference)
            self.P = scipy.sparse.csr_matrix((n, n))  # the fit's P is not needed to add points

        @property
        def n_samples(self):
            return len(self.reference)

        def to_new(self, data, perplexity=5, return_distances=False, k_neighbors="auto"):
            k = min(self.n_samples, int(3 * perplexity)) if k_neighbors == "auto" \
                else int(k_neighbors)
            neighbors, distances = nearest(data, self.reference, k)
            P = joint_probabilities_nn(neighbors, distances, [min(perplexity, k / 3)],
                                       symmetrize=False, normalization="point-wise",
                                       n_reference_samples=self.n_samples, n_jobs=n_jobs)
            return (P, neighbors, distances) if return_distances else P

    return ReferenceAffinities()


def extend_map(coords: np.ndarray, reference: np.ndarray, new: np.ndarray, seed: int, *,
               n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(reference coordinates, new coordinates): ``new`` feature vectors placed into the map
    ``coords`` of ``reference`` by openTSNE's ``transform`` (its defaults but
    :data:`TRANSFORM_ITERATIONS` iterations; the FFT-interpolated gradient for maps of
    :data:`FFT_FROM` points or more, Barnes-Hut below). The
    reference coordinates come back shifted by the centring ``transform`` applies."""
    from openTSNE import TSNEEmbedding

    emb = TSNEEmbedding(np.asarray(coords, dtype=np.float64), reference_affinities(reference,
                                                                                   n_jobs),
                        random_state=seed, n_jobs=n_jobs,
                        negative_gradient_method="fft" if len(coords) >= FFT_FROM else "bh")
    placed = emb.transform(np.asarray(new, dtype=np.float32), n_iter=TRANSFORM_ITERATIONS)
    return np.asarray(emb, dtype=np.float64), np.asarray(placed, dtype=np.float64)
