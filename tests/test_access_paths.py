"""Element sets and labels by (level, composition) (migration 0008) give the answers a
plain evaluation in Python gives, on both backends, heavy elements (Z >= 64) included."""

import numpy as np
import pytest
from ase import Atoms
from sqlalchemy import select

from registry.chem.elements import element_masks
from registry.query import as_filter
from registry.query.compile import Compiler
from registry.store.tables import compositions, element_sets, labels, structures

MOLECULES = ["CH4", "C2H6", "NH3", "HCN", "CH3NO", "UO2", "GdH3", "PbCl2", "UC", "H2O", "C2N2",
             "CNGdU"]


def _atoms(formula: str, shift: float) -> Atoms:
    a = Atoms(formula)
    a.positions = np.arange(3 * len(a), dtype=float).reshape(-1, 3) * (0.9 + shift)
    return a


@pytest.fixture
def reg(registry):
    """Each molecule twice (two geometries); level "a" on all, "b" on every third."""
    mols = [_atoms(f, s) for s in (0.0, 0.05) for f in MOLECULES]
    for i, m in enumerate(mols):
        m.info["energy"] = -float(i + 1)
    registry.ingest(mols, level="a")
    registry.ingest(mols[::3], level="b")
    registry.ingest(mols[:4], level="a")  # again: nothing new, no duplicates
    return registry


def _expected(reg, test) -> list[int]:
    """Ids whose (set of chemical symbols, level names with an ok label) pass ``test``."""
    S, L = structures.c, labels.c
    from registry.store.tables import levels_of_theory

    with reg.engine.connect() as c:
        rows = c.execute(select(S.id, S.numbers)).all()
        levels = c.execute(select(L.structure_id, levels_of_theory.c.name)
                           .join(levels_of_theory, levels_of_theory.c.id == L.level_id)
                           .where(L.status == "ok")).all()
    by_id: dict[int, set] = {}
    for sid, name in levels:
        by_id.setdefault(sid, set()).add(name)
    from ase.data import chemical_symbols

    out = []
    for sid, numbers in rows:
        zs = np.frombuffer(numbers, dtype=np.uint8)
        if test({chemical_symbols[z] for z in zs}, len(zs), by_id.get(sid, set())):
            out.append(sid)
    return sorted(out)


CASES = [
    ('elements HAS "U"', lambda e, n, lv: "U" in e),
    ('elements HAS ALL "U","O"', lambda e, n, lv: {"U", "O"} <= e),
    ('elements HAS ALL "C","Gd","U"', lambda e, n, lv: {"C", "Gd", "U"} <= e),
    ('elements HAS ANY "Gd","Pb"', lambda e, n, lv: bool({"Gd", "Pb"} & e)),
    ('elements HAS ONLY "C","H"', lambda e, n, lv: e <= {"C", "H"}),
    ('elements HAS ONLY "U","C","O"', lambda e, n, lv: e <= {"U", "C", "O"}),
    ('NOT elements HAS "H"', lambda e, n, lv: "H" not in e),
    ('elements HAS "C" OR elements HAS "Pb"', lambda e, n, lv: bool({"C", "Pb"} & e)),
    ('elements HAS ALL "C","N" AND _nnp_levels HAS "a"',
     lambda e, n, lv: {"C", "N"} <= e and "a" in lv),
    ('elements HAS ALL "C","N" AND nsites <= 3 AND _nnp_levels HAS "b"',
     lambda e, n, lv: {"C", "N"} <= e and n <= 3 and "b" in lv),
    ('elements HAS "U" AND _nnp_levels HAS ANY "a","b"',
     lambda e, n, lv: "U" in e and bool({"a", "b"} & lv)),
    ('elements HAS "C" AND _nnp_levels HAS ALL "a","b"',
     lambda e, n, lv: "C" in e and {"a", "b"} <= lv),
    ('elements HAS "C" AND _nnp_levels HAS "b" AND nsites > 4',
     lambda e, n, lv: "C" in e and "b" in lv and n > 4),
    ('elements HAS "C" AND _nnp_levels HAS "b" AND NOT elements HAS "N"',
     lambda e, n, lv: "C" in e and "b" in lv and "N" not in e),
]


@pytest.mark.parametrize(("text", "test"), CASES, ids=[c[0] for c in CASES])
def test_filters_match_python(reg, text, test):
    want = _expected(reg, test)
    assert want, text  # every case selects something
    assert reg.query_ids(text) == want
    assert reg.count(text) == len(want)


def test_level_and_composition_are_answered_from_labels(reg):
    """A filter that is one level + composition conditions gets an id select on labels
    alone; any other condition keeps the clause over structures."""
    with reg.session() as s:
        only = Compiler(session=s)
        only.root(as_filter('elements HAS "C" AND nsites <= 5 AND _nnp_levels HAS "a"'))
        assert only.id_select is not None
        more = Compiler(session=s)
        more.root(as_filter('elements HAS "C" AND _nnp_levels HAS "a" AND id > 3'))
        assert more.id_select is None


def test_labels_carry_their_structures_composition(reg):
    S, L = structures.c, labels.c
    with reg.engine.connect() as c:
        pairs = c.execute(select(L.composition_id, S.composition_id)
                          .join(structures, S.id == L.structure_id)).all()
    assert pairs and all(a == b for a, b in pairs)


def test_element_sets_hold_each_chemical_system_once(reg):
    E, C = element_sets.c, compositions.c
    with reg.engine.connect() as c:
        sets = {(lo, hi): n for _, lo, hi, n in c.execute(select(element_sets)).all()}
        linked = c.execute(select(C.formula_hill, E.mask_lo, E.mask_hi).join(
            element_sets, E.id == C.element_set_id)).all()
    assert len(sets) == len({(lo, hi) for _, lo, hi in linked})
    uo2 = {f: (lo, hi) for f, lo, hi in linked}["O2U"]
    assert uo2 == (1 << 7, 1 << (92 - 64))
    assert sets[uo2] == 2
    lo, hi = element_masks([1, 8, 92], np.array([[2, 1, 0], [0, 2, 1]]))
    assert lo.tolist() == [1 | 1 << 7, 1 << 7] and hi.tolist() == [0, 1 << 28]


@pytest.mark.parametrize(("text", "test"), CASES[:8], ids=[c[0] for c in CASES[:8]])
def test_element_sets_as_a_sub_query(reg, text, test, monkeypatch):
    """Without a session (and with more matching sets than are bound as ids) the element
    sets are a sub-query: same answers."""
    from registry.query import compile as compile_mod
    from registry.query import structure_filter

    want = _expected(reg, test)
    S = structures.c
    with reg.engine.connect() as c:
        got = c.execute(select(S.id).where(structure_filter(text)).order_by(S.id)).scalars()
        assert list(got) == want
    monkeypatch.setattr(compile_mod, "SET_IDS", 0)
    assert reg.query_ids(text) == want
