"""Formulas: the vectorised batch form agrees with the per-composition reference."""

import numpy as np
import pytest

from registry.chem.elements import compact_composition, formulas, formulas_batch


@pytest.mark.parametrize("zs", [[1, 6, 7, 8], [1, 8], [6], [3, 8, 15, 26],
                                [1, 2, 5, 6, 7, 8, 9, 14, 15, 16, 17, 26, 79]])
def test_formulas_batch_matches_reference(zs):
    rng = np.random.default_rng(len(zs))
    comp = rng.integers(0, 13, size=(2000, len(zs)))
    comp[rng.random(comp.shape) < 0.3] = 0
    comp[:3] = 700  # counts beyond the table of small counts
    got = formulas_batch(np.array(zs), comp)
    for i, row in enumerate(comp.tolist()):
        key = tuple((z, c) for z, c in zip(zs, row, strict=True) if c)
        assert (got[0][i], got[1][i], got[2][i]) == formulas(key)


def test_formulas_known_values():
    numbers = np.array([6, 1, 1, 1, 1, 8, 1, 1, 26, 8, 8, 8, 26])  # CH4, H2O, Fe2O3
    zs, comp = compact_composition(numbers, np.array([0, 5, 8, 13]))
    hill, reduced, anon = formulas_batch(zs, comp)
    assert hill == ["CH4", "H2O", "Fe2O3"]
    assert reduced == ["CH4", "H2O", "Fe2O3"]
    assert anon == ["A4B", "A2B", "A3B2"]
    assert formulas_batch(np.array([], dtype=int), np.zeros((2, 0), dtype=int)) == (
        ["", ""], ["", ""], ["", ""])


def test_compact_composition_few_and_many_elements_agree_with_counting():
    """Per-element passes (few elements) and the single table pass (many) give the same
    counts, empty structures included."""
    rng = np.random.default_rng(3)
    for palette in ([1, 6, 7, 8], list(range(1, 40))):
        sizes = rng.integers(0, 12, size=60)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        numbers = rng.choice(palette, size=int(offsets[-1]))
        zs, comp = compact_composition(numbers, offsets)
        assert zs.tolist() == sorted(set(numbers.tolist()))
        for i in range(60):
            own = numbers[offsets[i]: offsets[i + 1]].tolist()
            assert comp[i].tolist() == [own.count(z) for z in zs.tolist()]
