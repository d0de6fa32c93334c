"""Which candidates to label: the committee's most uncertain frames, spread over trajectories.

Eligible: candidates with a ρ whose structure has no ``ok`` label at the campaign's level yet,
one per identity hash (exact duplicates collapse). ``qbc`` takes frames above the threshold in
rounds: each round visits the trajectories in order of their most uncertain remaining frame
and takes that frame, skipping frames within ``separation`` steps of one already taken from
the same trajectory (neighbouring MD frames are near duplicates). So M picks come from the M
most uncertain trajectories first, never all from one. ``random`` takes M eligible frames
uniformly (the baseline of the science check), whatever their ρ.
"""

from __future__ import annotations

import numpy as np


def fraction_above(rho: np.ndarray, threshold: float) -> float | None:
    """The fraction of frames with ρ above ``threshold`` (None without any ρ)."""
    r = rho[np.isfinite(rho)]
    return None if not len(r) else float((r > threshold).mean())


def eligible(table: dict, exclude_hashes: set[str]) -> np.ndarray:
    """Indices of the candidates that may be selected (see the module docstring)."""
    best: dict[str, int] = {}
    rho = table["rho"]
    for i, h in enumerate(table["hash"]):
        if not np.isfinite(rho[i]) or h in exclude_hashes:
            continue
        if h not in best or rho[i] > rho[best[h]]:
            best[h] = i
    return np.array(sorted(best.values()), dtype=np.int64)


def select_qbc(table: dict, idx: np.ndarray, threshold: float, m: int,
               separation: int = 0) -> list[int]:
    """Candidate ids chosen by committee disagreement (module docstring)."""
    rho, traj, step = table["rho"], table["trajectory"], table["step"]
    queues: dict[int, list[int]] = {}
    for i in idx[rho[idx] > threshold]:
        queues.setdefault(int(traj[i]), []).append(int(i))
    for q in queues.values():
        q.sort(key=lambda i: (-rho[i], step[i]))
    taken: dict[int, list[int]] = {t: [] for t in queues}

    def head(t: int) -> int | None:
        """t's most uncertain remaining frame not within ``separation`` of a taken one."""
        q = queues[t]
        while q and any(abs(step[q[0]] - step[j]) <= separation for j in taken[t]):
            q.pop(0)
        return q[0] if q else None

    chosen: list[int] = []
    while len(chosen) < m:
        heads = {t: h for t in queues if (h := head(t)) is not None}
        if not heads:
            break
        for t in sorted(heads, key=lambda t: (-rho[heads[t]], t)):
            if len(chosen) == m:
                break
            i = queues[t].pop(0)  # the head: taken[t] changes only by t's own pick
            taken[t].append(i)
            chosen.append(i)
    return sorted(int(table["id"][i]) for i in chosen)


def select_random(table: dict, idx: np.ndarray, m: int, seed) -> list[int]:
    rng = np.random.default_rng(seed)
    pick = rng.choice(idx, size=min(m, len(idx)), replace=False) if len(idx) else idx
    return sorted(int(table["id"][i]) for i in pick)


def select(table: dict, *, threshold: float, m: int, method: str = "qbc",
           exclude_hashes: set[str] = frozenset(), separation: int = 0,
           seed=0) -> dict:
    """``{"ids", "fraction_above", "n_eligible", "n_above"}`` for the iteration's candidate
    ``table`` (:func:`registry.active_learning.candidates.candidate_table`)."""
    idx = eligible(table, set(exclude_hashes))
    above = int((table["rho"][idx] > threshold).sum()) if len(idx) else 0
    if m <= 0:
        ids = []
    elif method == "random":
        ids = select_random(table, idx, m, seed)
    else:
        ids = select_qbc(table, idx, threshold, m, separation)
    return {"ids": ids, "fraction_above": fraction_above(table["rho"], threshold),
            "n_eligible": int(len(idx)), "n_above": above}
