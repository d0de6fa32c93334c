"""Near-duplicates up to rotation, translation, permutation and a tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from helpers import crystal
from scipy.spatial.transform import Rotation

from registry.curation.dedup import aligned_rmsd, candidate_pairs, fingerprint
from registry.errors import BadInput

LEVEL = "pbe/def2-svp"


def _copy(a, seed, noise=0.0, shift=(0, 0, 0)):
    rng = np.random.default_rng(seed)
    b = a.copy()
    rot = Rotation.random(random_state=seed).as_matrix()
    b.positions = (a.positions - a.positions.mean(0)) @ rot.T + shift
    b.positions += rng.normal(scale=noise, size=b.positions.shape)
    perm = rng.permutation(len(b))
    return b[perm]


def test_rmsd_invariances():
    a = molecule("CH3CH2OH")
    b = _copy(a, 1, shift=(3, -2, 7))
    assert aligned_rmsd(a.numbers, a.positions, b.numbers, b.positions) < 1e-6
    assert np.allclose(fingerprint(a.positions), fingerprint(b.positions))
    c = molecule("CH3CH2OH")
    c.positions[0] += [0.4, 0, 0]
    assert aligned_rmsd(a.numbers, a.positions, c.numbers, c.positions) > 0.05
    iso = molecule("CH3OCH3")  # same formula, other molecule
    assert aligned_rmsd(a.numbers, a.positions, iso.numbers, iso.positions) > 0.3


def test_candidates_come_from_the_grid():
    rng = np.random.default_rng(0)
    fps = rng.uniform(0, 10, size=(400, 3))
    keys = ["k"] * 400
    pairs = set(candidate_pairs(keys, fps, 0.2))
    brute = {(i, j) for i in range(400) for j in range(i + 1, 400)
             if np.abs(fps[i] - fps[j]).max() <= 0.2}
    assert pairs == brute and len(pairs) < 400 * 399 / 2 / 100


def test_near_duplicates_query(registry):
    base = [molecule(n) for n in ("CH3CH2OH", "C6H6", "CH3OCH3")]
    frames = []
    for a in base:
        frames += [a, _copy(a, 2, noise=0.005, shift=(1, 2, 3)), _copy(a, 3, noise=0.005)]
    frames.append(_copy(base[0], 4, noise=0.3))  # too far to be a duplicate
    frames.append(crystal())
    for k, f in enumerate(frames):
        f.info["energy"] = -float(k)
    registry.ingest(frames, LEVEL)
    out = registry.near_duplicates(tolerance=0.05)
    assert out["n_structures"] == 11 and out["skipped_periodic"] == 1
    assert sorted((c["formula"], len(c["structure_ids"])) for c in out["clusters"]) == [
        ("C2H6O", 3), ("C2H6O", 3), ("C6H6", 3)]
    assert out["n_redundant"] == 6
    only = registry.near_duplicates(tolerance=0.05, filter="nsites=12")
    assert [c["formula"] for c in only["clusters"]] == ["C6H6"]
    v = registry.create_dataset_version("d", levels=[LEVEL], exclude_duplicates=0.05)
    assert v["n_structures"] == 11 - 6 and v["params"]["excluded_duplicates"] == 6
    with pytest.raises(BadInput, match="tolerance must be > 0"):
        registry.near_duplicates(tolerance=0)


def test_cli(registry, nnp, capsys):
    a = molecule("C6H6")
    frames = [a, _copy(a, 5)]
    for f in frames:
        f.info["energy"] = -1.0
    registry.ingest(frames, LEVEL)
    assert nnp("dedup", "--tolerance", "0.01", "--json") == 0
    assert '"n_redundant": 1' in capsys.readouterr().out


def test_lower_bound_never_exceeds_the_rmsd():
    """The sorted-radius bound is below the aligned RMSD for near and far pairs alike, so the
    pre-filter can never drop a true duplicate."""
    from registry.curation.dedup import radial_signature, rmsd_lower_bound

    for name in ("CH3CH2OH", "C6H6", "CH3OCH3", "H2O"):
        a = molecule(name)
        for seed, noise in [(1, 0.001), (2, 0.01), (3, 0.05), (4, 0.2), (5, 0.5)]:
            b = _copy(a, seed, noise=noise, shift=(1, -2, 0.5))
            rmsd = aligned_rmsd(a.numbers, a.positions, b.numbers, b.positions)
            bound = rmsd_lower_bound(radial_signature(a.numbers, a.positions),
                                     radial_signature(b.numbers, b.positions))
            assert bound <= rmsd + 1e-9, (name, noise)


def test_prefilter_and_dask_tasks_give_the_same_clusters(registry, client):
    rng = np.random.default_rng(7)
    frames = []
    for name in ("CH3CH2OH", "CH3OCH3", "C6H6", "CH4", "NH3"):
        a = molecule(name)
        frames += [a] + [_copy(a, int(s), noise=float(n)) for s, n in
                         zip(rng.integers(0, 1000, 4), (0.002, 0.008, 0.02, 0.04), strict=True)]
    for k, f in enumerate(frames):
        f.info["energy"] = -float(k)
    registry.ingest(frames, LEVEL)

    def on_dask(fn, work):
        return client.gather(client.map(fn, *zip(*work, strict=True), pure=False))

    plain = registry.near_duplicates(tolerance=0.02, prefilter=False)
    fast = registry.near_duplicates(tolerance=0.02)
    tasks = registry.near_duplicates(tolerance=0.02, mapper=on_dask, chunks=3)
    assert plain["clusters"] and plain["prefiltered_pairs"] == 0
    assert fast["prefiltered_pairs"] > 0
    assert plain["clusters"] == fast["clusters"] == tasks["clusters"]
    assert plain["candidate_pairs"] == fast["candidate_pairs"] == tasks["candidate_pairs"]
