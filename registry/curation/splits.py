"""Train / validation / test splits: group-aware, deterministic for a seed.

Members are identified by strings (structure hashes), so the same content gives the same
split on any backend. Groups (a formula, a source, or each structure alone) are shuffled with
``numpy.random.default_rng(seed)`` and laid end to end; a group goes to the split in which
its first member falls, so a group is never cut across splits.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInput

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")
GROUP_BY = ("formula", "source", "none")


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


def assign_splits(keys: list[str], groups: list[str], fractions, seed: int) -> np.ndarray:
    """Split index (0/1/2) per member; members sharing a group share a split.

    ``keys`` order members canonically (ties between groups are broken by the group string);
    the result does not depend on the order the members are given in.
    """
    seed = check_seed(seed)
    n = len(keys)
    if len(groups) != n:
        raise ValueError("keys and groups differ in length")
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    uniq, inverse, sizes = np.unique(np.asarray(groups, dtype=object).astype(str),
                                     return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    start = np.empty(len(uniq), dtype=np.float64)
    start[order] = np.concatenate([[0], np.cumsum(sizes[order])[:-1]])
    cuts = np.cumsum(fractions)[:2] * n
    # group goes where its first member lands; round-off guard keeps empty splits empty
    group_split = np.searchsorted(cuts - 1e-9, start, side="right").astype(np.int8)
    group_split[group_split > 2] = 2
    return group_split[inverse]
