"""Diversity numbers of one element: overall, per dataset version and per AL iteration.

The analysed environments are one element's sample (their feature vectors, in the order of
their rows in :class:`.environments.Environments`); the reference set is another version's
sample (``--reference``) or, by default, the analysed sample itself. Definitions:
:mod:`.metrics` and docs/diversity.md.
"""

from __future__ import annotations

import numpy as np

from . import metrics
from .environments import Environments, first_iteration


def element_numbers(env: Environments, z: int, rows: np.ndarray, feats: np.ndarray,
                    reference: np.ndarray | None, seed: int) -> dict:
    """Numbers of element ``z`` whose sampled rows ``rows`` of ``env`` have features
    ``feats``: ``n_environments`` (all of the element's atoms, not only the sample),
    ``n_sampled``, ``radius``, ``coverage``, ``mean_nn_distance``,
    ``effective_environments``, ``per_version`` {ref: numbers} and ``per_iteration``
    [{iteration, n_new, novel_fraction, cumulative numbers}]."""
    rng = np.random.default_rng(seed)
    ref = feats if reference is None else reference
    # the reference's scale; the analysed set's when the reference lacks the element
    radius = metrics.resolution(ref if len(ref) else feats, rng)
    done: dict[bytes, dict] = {}

    def numbers(mask: np.ndarray) -> dict:
        # a set met again (one version, the last iteration...) is not computed again
        tag = np.packbits(mask).tobytes() + len(mask).to_bytes(8, "little")
        if tag not in done:
            own = reference is None and bool(mask.all())  # the reference is this very set
            done[tag] = metrics.set_numbers(feats[mask], None if own else ref, radius, rng)
        return done[tag]

    of_z = env.z == z
    everything = np.ones(len(rows), bool)
    out = {"n_environments": int(of_z.sum()), "radius": radius, **numbers(everything)}
    member = env.member[rows]
    out["per_version"] = {}
    for k, name in enumerate(env.refs):
        out["per_version"][name] = {
            "n_environments": int((of_z & env.member[:, k]).sum()), **numbers(member[:, k])}
    it_all = first_iteration(env)
    it = it_all[rows]
    out["per_iteration"] = []
    for i in np.unique(it):
        new, before = it == i, it < i
        out["per_iteration"].append({
            "iteration": int(i), "n_new": int((of_z & (it_all == i)).sum()),
            "novel_fraction": metrics.novel_fraction(feats[new], feats[before], radius, rng),
            **numbers(it <= i)})
    return out


def version_view(numbers: dict, ref: str) -> dict:
    """The numbers of one dataset version out of :func:`element_numbers` (what is stored
    with it and shown by ``nnp dataset show``)."""
    v = numbers["per_version"][ref]
    return {"radius": numbers["radius"], **v}
