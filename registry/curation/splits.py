"""Train / validation / test splits: group-aware, deterministic for a seed.

Members are identified by strings (structure hashes), so the same content gives the same
split on any backend. Groups (a formula, a source, or each structure alone) are shuffled with
``numpy.random.default_rng(seed)`` and laid end to end; a group goes to the split in which
its first member falls, so a group is never cut across splits. With strata (e.g. the formula
while grouping by source), each stratum is split on its own with the same fractions, so every
stratum with a group to spare has members in training: a grouped split over a few molecules
otherwise leaves whole molecules out of the training split for some seeds.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInput

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")
GROUP_BY = ("formula", "source", "none")
STRATIFY_BY = ("none", "formula")


def check_stratify(stratify_by: str | None, group_by: str) -> str | None:
    """``stratify_by`` as ``"formula"`` or None; refuses unknown values and a stratum that
    equals the group (grouping by formula already makes every formula one group)."""
    if stratify_by is None or stratify_by == "none":
        return None
    if stratify_by not in STRATIFY_BY:
        raise BadInput(f"--stratify-by {stratify_by!r}: expected one of {', '.join(STRATIFY_BY)}")
    if stratify_by == group_by:
        raise BadInput(f"--stratify-by {stratify_by} with --group-by {group_by}: every "
                       f"{group_by} is one group, so it cannot also be split across the splits; "
                       "group by source or none to stratify by formula")
    return stratify_by


def parse_fractions(text) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or a sequence) -> three fractions >= 0 that sum to 1."""
    if isinstance(text, str):
        try:
            vals = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise BadInput(f"split {text!r}: expected numbers like 0.8,0.1,0.1") from None
    else:
        vals = [float(x) for x in text]
    if not 1 <= len(vals) <= 3:
        raise BadInput(f"split {text!r}: give 1 to 3 fractions (train,valid,test)")
    vals += [0.0] * (3 - len(vals))
    if any(not np.isfinite(v) or v < 0 for v in vals):
        raise BadInput(f"split {text!r}: fractions must be finite and >= 0")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise BadInput(f"split fractions {text!r} sum to {sum(vals):g}, not 1")
    return tuple(vals)


def check_seed(seed) -> int:
    """``seed`` as an int if it is an integer >= 0 (what ``numpy.random.default_rng`` takes),
    else :class:`BadInput`."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise BadInput(f"seed {seed!r}: expected an integer >= 0")
    return int(seed)


def assign_splits(keys: list[str], groups: list[str], fractions, seed: int,
                  strata: list[str] | None = None) -> np.ndarray:
    """Split index (0/1/2) per member; members sharing a group share a split.

    ``keys`` order members canonically (ties between groups are broken by the group string);
    the result does not depend on the order the members are given in. ``strata`` (one per
    member) splits each stratum separately with ``fractions``; a group spanning several
    strata belongs to its most frequent one (ties: the first by string).
    """
    seed = check_seed(seed)
    n = len(keys)
    if len(groups) != n or (strata is not None and len(strata) != n):
        raise ValueError("keys, groups and strata differ in length")
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups, dtype=object).astype(str)
    if strata is None:
        return _split_groups(groups, fractions, rng)
    g_uniq, g_inv = np.unique(groups, return_inverse=True)
    s_uniq, s_inv = np.unique(np.asarray(strata, dtype=object).astype(str),
                              return_inverse=True)
    pairs, counts = np.unique(g_inv.astype(np.int64) * len(s_uniq) + s_inv,
                              return_counts=True)
    pg, ps = pairs // len(s_uniq), pairs % len(s_uniq)
    first = np.lexsort((ps, -counts, pg))  # per group: most members, then first stratum
    keep = first[np.r_[True, pg[first][1:] != pg[first][:-1]]]
    group_stratum = np.empty(len(g_uniq), dtype=np.int64)
    group_stratum[pg[keep]] = ps[keep]
    member_stratum = group_stratum[g_inv]
    out = np.empty(n, dtype=np.int8)
    for k in range(len(s_uniq)):  # strata in string order, one generator: deterministic
        idx = np.flatnonzero(member_stratum == k)
        if len(idx):
            out[idx] = _split_groups(groups[idx], fractions, rng)
    return out


def _split_groups(groups: np.ndarray, fractions, rng) -> np.ndarray:
    """Shuffle the groups with ``rng``, lay them end to end, cut at ``fractions``."""
    n = len(groups)
    uniq, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(uniq))
    start = np.empty(len(uniq), dtype=np.float64)
    start[order] = np.concatenate([[0], np.cumsum(sizes[order])[:-1]])
    cuts = np.cumsum(fractions)[:2] * n
    # group goes where its first member lands; round-off guard keeps empty splits empty
    group_split = np.searchsorted(cuts - 1e-9, start, side="right").astype(np.int8)
    group_split[group_split > 2] = 2
    return group_split[inverse]
