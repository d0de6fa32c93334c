"""Random extxyz files through ``nnp ingest FILE --level L --json``, on both backends.

Each case is a file of one to three frames (distinct atom counts, so distinct structures),
either clean or with one fault: non-finite or out-of-range positions, cells, energies, forces,
charges or multiplicities, unknown elements, missing or extra columns, degenerate cells,
missing energies, text where a number belongs. Each case asserts one of:

* refused: exit status 2, stderr starting with ``error:``, no traceback, and no row written
  (structures, labels, compositions, levels... all unchanged); a fault that must be refused
  (every fault but the extreme-but-valid values and extra columns) is never accepted;
* accepted (clean files always are): every frame reads back from the registry with the same
  elements, charge, multiplicity, pbc and cell, positions equal (exactly when the structure is
  new, within the identity hash's tolerance when it was already stored), energy and forces
  exactly equal; ingesting the file again adds nothing.

Every case uses a level of its own, so labels never collide with an earlier case's.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.chem.identity import TOLERANCE

from .support import (
    backend_registry,
    consistency_problems,
    fuzz_settings,
    table_counts,
    tally,
)

SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "Cu": 29}
# Faults that must be refused; "extreme" (large but valid values) may go either way.
MUST_REFUSE = {"nonfinite_position", "nonfinite_cell", "nonfinite_energy", "nonfinite_force",
               "huge_position", "huge_cell", "bad_charge", "bad_multiplicity",
               "unknown_element", "missing_columns", "zero_volume", "missing_energy",
               "bad_number", "extra_columns"}
FAULTS = sorted(MUST_REFUSE | {"extreme"})
NONFINITE = ["nan", "inf", "-inf", "NaN", "-Infinity"]


def num(x: float) -> str:
    return repr(float(x))


@dataclass
class Frame:
    symbols: list[str]
    positions: list[list[str]]
    energy: str | None
    forces: list[list[str]] | None = None
    cell: list[str] | None = None
    pbc: list[bool] = field(default_factory=lambda: [False] * 3)
    charge: str | None = None
    multiplicity: str | None = None
    extra: dict[int, str] = field(default_factory=dict)  # atom -> extra column text
    drop: dict[int, int] = field(default_factory=dict)  # atom -> columns dropped

    def text(self) -> str:
        props = "species:S:1:pos:R:3" + (":forces:R:3" if self.forces is not None else "")
        head = []
        if self.cell is not None:
            head.append('Lattice="' + " ".join(self.cell) + '"')
        head.append(f"Properties={props}")
        if self.energy is not None:
            head.append(f"energy={self.energy}")
        if self.charge is not None:
            head.append(f"charge={self.charge}")
        if self.multiplicity is not None:
            head.append(f"multiplicity={self.multiplicity}")
        head.append('pbc="' + " ".join("T" if p else "F" for p in self.pbc) + '"')
        lines = [str(len(self.symbols)), " ".join(head)]
        for i, sym in enumerate(self.symbols):
            cols = [sym, *self.positions[i], *(self.forces[i] if self.forces else [])]
            if i in self.drop:
                cols = cols[: len(cols) - self.drop[i]]
            if i in self.extra:
                cols.append(self.extra[i])
            lines.append(" ".join(cols))
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ strategies
def some_periodic():
    """Three pbc flags, at least one true."""
    return st.tuples(st.integers(0, 2), st.lists(st.booleans(), min_size=3, max_size=3)).map(
        lambda t: [p or i == t[0] for i, p in enumerate(t[1])])


def plain(lo=-20.0, hi=20.0):
    return st.floats(lo, hi, allow_nan=False).map(num)


def energies():
    return st.one_of(plain(-1e4, 1e4), st.floats(allow_nan=False, allow_infinity=False)
                     .map(num))


@st.composite
def clean_frame(draw, n: int) -> Frame:
    syms = draw(st.lists(st.sampled_from(list(SYMBOLS)), min_size=n, max_size=n))
    pos = [draw(st.lists(plain(), min_size=3, max_size=3)) for _ in range(n)]
    forces = None
    if draw(st.booleans()):
        forces = [draw(st.lists(plain(-50, 50), min_size=3, max_size=3)) for _ in range(n)]
    f = Frame(syms, pos, draw(energies()), forces)
    kind = draw(st.sampled_from(["molecule", "molecule+cell", "periodic"]))
    if kind != "molecule":
        a = draw(st.lists(st.floats(3.0, 30.0), min_size=3, max_size=3))
        off = draw(st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6))
        cell = [[a[0], off[0], off[1]], [off[2], a[1], off[3]], [off[4], off[5], a[2]]]
        f.cell = [num(x) for row in cell for x in row]
        if kind == "periodic":
            f.pbc = draw(some_periodic())
    if draw(st.booleans()):
        f.charge = str(draw(st.integers(-3, 3)))
    if draw(st.booleans()):
        f.multiplicity = str(draw(st.integers(1, 5)))
    return f


def _atom_coord(draw, f: Frame, values) -> None:
    i, k = draw(st.integers(0, len(f.symbols) - 1)), draw(st.integers(0, 2))
    f.positions[i][k] = draw(values)


def _cell_entry(draw, f: Frame, values) -> None:
    if f.cell is None:
        f.cell = [num(x) for x in np.eye(3).ravel() * 10]
    f.cell[draw(st.integers(0, 8))] = draw(values)


@st.composite
def faulty_frame(draw, n: int, fault: str) -> Frame:
    """A clean frame with ``fault`` put in."""
    f = draw(clean_frame(n))
    if fault == "nonfinite_position":
        _atom_coord(draw, f, st.sampled_from(NONFINITE))
    elif fault == "nonfinite_cell":
        _cell_entry(draw, f, st.sampled_from(NONFINITE))
        f.pbc = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    elif fault == "nonfinite_energy":
        f.energy = draw(st.sampled_from(NONFINITE))
    elif fault == "nonfinite_force":
        if f.forces is None:
            f.forces = [["0.0"] * 3 for _ in range(n)]
        i = draw(st.integers(0, n - 1))
        f.forces[i][draw(st.integers(0, 2))] = draw(st.sampled_from(NONFINITE))
    elif fault == "huge_position":
        _atom_coord(draw, f, st.one_of(
            st.sampled_from(["1.0000001e14", "-1e15", "1e16", "1e300", "-1e308",
                             "1.7976931348623157e308", "1e400"]),
            st.floats(1.01e14, 1e308).map(num)))
    elif fault == "huge_cell":
        _cell_entry(draw, f, st.sampled_from(["1.0000001e14", "1e16", "-1e300", "1e400"]))
    elif fault == "bad_charge":
        f.charge = draw(st.sampled_from(["0.5", "-1.5", "1e400", "nan", "inf", "40000",
                                         "-32769", "99999999999999999999", "abc", "T",
                                         "9223372036854775808", "1e5"]))
    elif fault == "bad_multiplicity":
        f.multiplicity = draw(st.sampled_from(["0", "-3", "2.5", "40000", "nan", "-inf",
                                               "abc", "F", "1e400", "32768"]))
    elif fault == "unknown_element":
        i = draw(st.integers(0, n - 1))
        f.symbols[i] = draw(st.sampled_from(["Xx", "X", "Q", "Zz", "Uue", "1", "119", "@"]))
    elif fault == "missing_columns":
        f.drop[draw(st.integers(0, n - 1))] = draw(st.integers(1, 2))
    elif fault == "extra_columns":
        f.extra[draw(st.integers(0, n - 1))] = draw(plain())
    elif fault == "zero_volume":
        f.cell = draw(st.sampled_from([["0"] * 9, ["3", "0", "0", "0", "3", "0", "3", "3", "0"],
                                       ["1", "0", "0", "2", "0", "0", "0", "0", "1"]]))
        f.pbc = draw(some_periodic())
    elif fault == "missing_energy":
        f.energy = None
    elif fault == "bad_number":
        bad = st.sampled_from(["abc", "1.0.0", "--1", "0x10", "1e", "∞"])
        if draw(st.booleans()):
            f.energy = draw(bad)
        else:
            _atom_coord(draw, f, bad)
    elif fault == "extreme":  # large or tiny but within every documented bound
        big = st.one_of(st.sampled_from(["9.9e13", "-9.9e13", "5e-324", "-0.0", "1e-300"]),
                        st.floats(-9e13, 9e13).map(num))
        what = draw(st.sampled_from(["position", "energy", "charge", "multiplicity", "force"]))
        if what == "position":
            f.cell, f.pbc = None, [False] * 3  # a molecule: a far atom is fine
            _atom_coord(draw, f, big)
        elif what == "energy":
            f.energy = draw(st.sampled_from(["1e308", "-1.7976931348623157e308", "5e-324"]))
        elif what == "charge":
            f.charge = draw(st.sampled_from(["32767", "-32768", "2.0", "-0"]))
        elif what == "multiplicity":
            f.multiplicity = draw(st.sampled_from(["32767", "1.0"]))
        else:  # forces far from overflow (see the max_force finding)
            f.forces = [[draw(st.sampled_from(["1e150", "-1e150", "5e-324"]))] * 3
                        for _ in range(n)]
    return f


@st.composite
def xyz_files(draw, fault: str) -> list[Frame]:
    """One to three frames; with a ``fault``, one of them holds it."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=True))
    bad = draw(st.integers(0, len(sizes) - 1))
    return [draw(faulty_frame(n, fault) if k == bad and fault != "none" else clean_frame(n))
            for k, n in enumerate(sizes)]


# ------------------------------------------------------------------------------ checks
def _float(text: str) -> float:
    return float(text)


def _matched(a_z, a_pos, b_z, b_pos, same) -> bool:
    """Whether the atoms (Z, position) of a and b pair up one to one under ``same``."""
    left = list(range(len(b_z)))
    for z, p in zip(a_z, a_pos, strict=True):
        hit = next((j for j in left if b_z[j] == z and same(p, b_pos[j])), None)
        if hit is None:
            return False
        left.remove(hit)
    return not left


def check_read_back(reg, level: str, frames: list[Frame], all_new: bool) -> None:
    stored = {}
    for b in reg.iter_frames([level], labelled_only=True):
        lab = b.labels[level]
        for i in range(len(b)):
            lo, hi = int(b.offsets[i]), int(b.offsets[i + 1])
            stored[hi - lo] = dict(
                z=b.numbers[lo:hi].tolist(), pos=b.positions[lo:hi], cell=b.cells[i],
                pbc=b.pbc[i].tolist(), charge=int(b.charge[i]), mult=int(b.multiplicity[i]),
                energy=float(lab.energy[i]),
                forces=None if lab.forces is None else lab.forces[lo:hi])
    assert sorted(stored) == sorted(len(f.symbols) for f in frames), stored.keys()
    for f in frames:
        s = stored[len(f.symbols)]
        z = [SYMBOLS[sym] for sym in f.symbols]
        pos = np.array([[_float(x) for x in p] for p in f.positions])
        assert s["pbc"] == f.pbc, (s["pbc"], f.pbc)
        assert s["charge"] == int(float(f.charge or 0)) and s["mult"] == int(
            float(f.multiplicity or 1)), (s, f)
        assert s["energy"] == _float(f.energy), (s["energy"], f.energy)
        if any(f.pbc):
            cell = np.array([_float(x) for x in f.cell]).reshape(3, 3)
            assert np.allclose(s["cell"], cell, rtol=0, atol=TOLERANCE), (s["cell"], cell)
        if all_new:  # stored as given: the same numbers, atoms in canonical order
            assert _matched(z, pos, s["z"], s["pos"], lambda p, q: np.array_equal(p, q)), (
                z, pos, s["z"], s["pos"])
            if f.forces is not None:
                fz = np.array([[_float(x) for x in r] for r in f.forces])
                pairs = sorted(zip(map(tuple, pos), map(tuple, fz), strict=True))
                got = sorted(zip(map(tuple, s["pos"]), map(tuple, s["forces"]), strict=True))
                assert pairs == got, (pairs, got)
        else:  # an earlier case stored the same structure: equal up to the hash's rounding
            assert same_structure(z, pos, f.pbc, s), (z, pos, s["z"], s["pos"])


def same_structure(z, pos, pbc, s) -> bool:
    """Whether atoms ``z`` at ``pos`` are the stored structure ``s`` up to what the identity
    hash ignores: a rigid translation (molecules), periodic images (periodic axes) and
    differences below its rounding."""
    slack = 2 * TOLERANCE + 1e-12 * max(1.0, float(np.abs(pos).max()))
    per = np.array(pbc)
    if not per.any():
        a, b = pos - pos.mean(axis=0), s["pos"] - s["pos"].mean(axis=0)
        lengths = np.ones(3)
    else:  # fractional coordinates; distances along each axis in Å
        inv = np.linalg.inv(s["cell"].T)
        a, b = pos @ inv.T, s["pos"] @ inv.T
        lengths = np.linalg.norm(s["cell"], axis=1)

    def same(p, q):
        d = p - q
        d = np.where(per, d - np.round(d), d)
        return (np.abs(d) * lengths).max() <= slack

    return _matched(z, a, s["z"], b, same)


def ingest(nnp, capsys, path, level):
    capsys.readouterr()
    code = nnp("ingest", path, "--level", level, "--json")
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err, (out.out, out.err)
    return code, out.out, out.err


# ------------------------------------------------------------------------------ the test
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    """One registry per backend for every case of the module (cases compare row counts)."""
    with backend_registry(request.param, tmp_path_factory) as reg:
        yield reg


@pytest.fixture
def registry(store, monkeypatch, tmp_path):
    """The module's registry; the CLI (``nnp`` fixture) talks to it."""
    monkeypatch.setenv("NNP_DATABASE_URL", store.url)
    monkeypatch.setenv("NNP_ARTIFACTS", str(tmp_path / "artifacts"))
    return store


# Clean files get more cases than each fault: they exercise the whole round trip.
CASES = {"none": 8, **{f: 3 for f in FAULTS}}
PARTS = sum(CASES.values())


def case_settings(fault):
    return fuzz_settings(CASES[fault], parts=PARTS / CASES[fault])


@pytest.mark.parametrize("fault", list(CASES))
def test_extxyz_refused_cleanly_or_round_trips(registry, nnp, capsys, tmp_path, fault):
    @case_settings(fault)
    @given(frames=xyz_files(fault))
    def one(frames):
        check_case(registry, nnp, capsys, tmp_path, fault, frames)

    one()


def check_case(registry, nnp, capsys, tmp_path, fault, frames) -> None:
    path = tmp_path / "fuzz.xyz"
    text = "".join(f.text() for f in frames)
    path.write_text(text)
    level = f"fuzz-{uuid.uuid4().hex[:10]}"
    before = table_counts(registry)
    code, out, err = ingest(nnp, capsys, path, level)
    tally(f"extxyz {registry.dialect}", "refused" if code == 2 else "accepted" if code == 0
          else f"exit {code}")
    assert code in (0, 2), (code, err, text)
    if code == 2:
        assert err.startswith("error:"), (err, text)
        assert str(path) in err, (err, text)  # names the input
        assert table_counts(registry) == before, (err, text)
        assert fault != "none", f"a clean file was refused: {err}\n{text}"
        return
    assert fault not in MUST_REFUSE, f"{fault} was accepted:\n{text}"
    summary = json.loads(out)
    n = len(frames)
    assert summary["frames_read"] == n and summary["labels_new"] == n, summary
    assert summary["structures_new"] + summary["structures_existing"] == n, summary
    after = table_counts(registry)
    assert after["Structure"] == before["Structure"] + summary["structures_new"]
    assert after["Label"] == before["Label"] + n
    assert not consistency_problems(registry)
    check_read_back(registry, level, frames, all_new=summary["structures_existing"] == 0)
    code, out, err = ingest(nnp, capsys, path, level)  # the same file again: nothing new
    assert code == 0, err
    again = json.loads(out)
    assert (again["structures_new"], again["labels_new"], again["labels_existing"]) == (0, 0, n)
    assert table_counts(registry) == after
