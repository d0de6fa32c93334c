"""Random OPTIMADE filters (from the grammar, deep, wide, or any text) on SQLite and
PostgreSQL holding the same structures: each filter either gets the same count on both
backends, or the same registry error (never another exception type, never a RecursionError).
A filter that is answered also satisfies two-valued logic (``count(f) + count(NOT (f))`` is
the number of structures) and prints back to text that parses to the same tree and count."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from helpers import crystal, labelled_molecules
from hypothesis import example, given
from hypothesis import strategies as st

from registry.errors import RegistryError

from .strategies import filters
from .support import backend_registry, fuzz_settings, tally

LEVELS = ["pbe", None, "wb97x/6-31g*", "nosuch"]


def build(reg) -> None:
    """The same small registry on each backend: molecules at two levels (one with reference
    energies), crystals, an unlabelled slab, ions, a retracted label, two dataset versions
    and an alias. Row ids, hashes and runs come out the same on both backends."""
    mols = labelled_molecules()
    reg.ingest(mols, "pbe", source="mols.xyz")
    reg.ingest(labelled_molecules(("H2O", "CH4", "C6H6"), seed=1), "wb97x/6-31g*",
               source="other.xyz")
    cu = [crystal(seed=k) for k in range(3)]
    for k, a in enumerate(cu):
        a.info["energy"] = -10.0 * (k + 1)
        a.arrays["forces"] = np.full((len(a), 3), 0.1 * k)
    reg.ingest(cu, "pbe", source="cu.xyz")
    slab = crystal(seed=7)
    slab.pbc = (True, True, False)
    reg.ingest([slab], None)
    ions = labelled_molecules(("NH3", "H2O"), seed=2)
    for a, (q, m) in zip(ions, [(1, 1), (-1, 2)], strict=True):
        a.info.update(charge=q, multiplicity=m)
    reg.ingest(ions, "pbe", source=None)
    reg.ingest([ase.Atoms("He")], None, source="' OR 1=1 --")
    reg.set_reference_energies("pbe", {"H": -13.6, "C": -1000.0, "O": -2000.0})
    reg.create_dataset_version("d1", levels="pbe", seed=1)
    reg.retract_labels(filter='chemical_formula_reduced = "CH4"', level="pbe", reason="fuzz")
    reg.create_dataset_version("d1", levels="pbe", filter="nsites < 10", seed=2)
    reg.alias_dataset("d1:1", "production")


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """(SQLite registry, PostgreSQL registry) holding the same data."""
    with backend_registry("sqlite", tmp_path_factory) as lite, \
            backend_registry("postgresql", tmp_path_factory) as pg:
        build(lite)
        build(pg)
        yield lite, pg


def outcome(reg, text: str, level: str | None):
    """("count", n) or ("error", type name, message); anything else fails the case."""
    try:
        return ("count", reg.count(text, level=level))
    except RegistryError as exc:
        msg = str(exc)
        assert msg.strip(), (text, level, type(exc).__name__)
        return ("error", type(exc).__name__, msg)
    except Exception as exc:  # noqa: BLE001  (the point: no other exception may escape)
        pytest.fail(f"{type(exc).__name__}: {exc}\n  on {reg.dialect} for filter "
                    f"{text[:500]!r} (level={level!r})")


def test_backends_hold_the_same_data(backends):
    lite, pg = backends
    assert lite.count() == pg.count() == 15
    assert lite.query_ids("NOT _nnp_levels HAS \"pbe\"") == pg.query_ids(
        "NOT _nnp_levels HAS \"pbe\"")
    assert [r["hash"] for r in lite.query()] == [r["hash"] for r in pg.query()]


@fuzz_settings(150)
@given(text=filters(), level=st.sampled_from(LEVELS))
@example(text="(" * 200 + "nsites = 1" + ")" * 200, level=None)  # issue 13: RecursionError
@example(text=" OR ".join(f"nsites = {k}" for k in range(500)), level=None)  # SQLite: too large
@example(text="nsites > 3000000000", level=None)  # issue 13: PostgreSQL integer out of range
@example(text="id = 99999999999999999999999", level=None)
@example(text='_nnp_energy_per_atom < -100 OR _nnp_max_force IS KNOWN', level="pbe")
def test_filter_same_answer_on_both_backends(backends, text, level):
    lite, pg = backends
    got = outcome(lite, text, level)
    assert outcome(pg, text, level) == got, text[:500]
    tally("filters (both backends)", "answered" if got[0] == "count" else f"refused ({got[1]})")
    if got[0] != "count":
        return
    total = lite.count()
    negated = f"NOT ({text})" if text.strip() else None
    if negated is not None:
        neg = outcome(lite, negated, level)
        if neg[0] == "error":  # the parentheses added one level: only a limit may refuse it
            assert "the limit is" in neg[2], (negated[:500], neg)
        else:
            assert got[1] + neg[1] == total, (text[:500], level, got, neg)
            assert outcome(pg, negated, level) == neg, negated[:500]
    from registry.query import parse

    tree = parse(text)
    printed = str(tree)
    assert parse(printed) == tree, (text[:500], printed[:500])
    assert outcome(lite, printed, level) == got, (text[:500], printed[:500])


@pytest.mark.parametrize("text, says", [
    (" OR ".join(f"nsites = {k}" for k in range(1001)), "filter has 1001 conditions"),
    (" AND ".join(f"(nsites > {k} OR elements HAS \"H\")" for k in range(100)), None),
    ("(" * 64 + "nsites = 1" + ")" * 64, None),
    ("(" * 65 + "nsites = 1" + ")" * 65, "filter nests 65 levels deep"),
])
def test_filter_limits_on_both_backends(backends, text, says):
    """The documented limits, at and just beyond them (docs/queries.md#limits; filters of
    exactly 1000 terms are answered in tests/test_robust_names.py)."""
    lite, pg = backends
    got = outcome(lite, text, None)
    assert outcome(pg, text, None) == got
    if says is None:
        assert got[0] == "count", got
    else:
        assert got[0] == "error" and says in got[2] and "the limit is" in got[2], got
