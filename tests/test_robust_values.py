"""Values inside structures (issue 13): non-finite or huge cells and coordinates, charges
and multiplicities that are not whole numbers or do not fit their column. Each is refused
with one line naming the frame and the problem, exit status 2 and no rows written, on both
backends; no numpy RuntimeWarning reaches the user."""

from __future__ import annotations

import re

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from helpers import counts, crystal, labelled_molecules

from registry.chem.frames import FrameBatch
from registry.chem.identity import MAX_COORDINATE, TOLERANCE
from registry.errors import BadInput

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def frame(z="0.1", extra="", pbc="F F F", energy="-10.5"):
    """A water extxyz frame; ``z`` is the oxygen's z coordinate."""
    return (f"3\nProperties=species:S:1:pos:R:3 energy={energy} {extra} pbc=\"{pbc}\"\n"
            f"O 0.0 0.0 {z}\nH 0.0 0.7 -0.5\nH 0.0 -0.7 -0.5\n")


GOOD = frame(z="0.35")  # a first, good frame: the bad one is frame 1


def cell(text):
    return f'Lattice="{text}"'


@pytest.fixture
def seeded(registry, nnp, tmp_path):
    """A registry holding 5 structures and 5 labels before each bad ingest."""
    ase.io.write(tmp_path / "seed.xyz", labelled_molecules(), format="extxyz")
    assert nnp("ingest", tmp_path / "seed.xyz", "--level", "pbe") == 0
    assert counts(registry) == (5, 5)
    return registry


def compositions(reg) -> int:
    from sqlalchemy import func, select

    from registry.store.schema import Composition

    with reg.session() as s:
        return s.scalar(select(func.count()).select_from(Composition))


def refused(reg, nnp, capsys, tmp_path, text, *expect, name="bad.xyz"):
    """Write ``text`` to a file, ``nnp ingest`` it; exit 2, one error line holding the file's
    frame 1 and every ``expect`` text, no Traceback, no rows (compositions included)."""
    path = tmp_path / name
    path.write_text(text)
    capsys.readouterr()
    before = counts(reg), compositions(reg)
    code = nnp("ingest", path, "--level", "pbe")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    assert flat.startswith("error:"), flat
    for part in (f"{path} frame 1", *expect):
        assert part in flat, (part, flat)
    assert (counts(reg), compositions(reg)) == before
    return flat


def api_refused(reg, frames, match):
    before = counts(reg), compositions(reg)
    with pytest.raises(BadInput, match=match):
        reg.ingest(frames, "pbe")
    assert (counts(reg), compositions(reg)) == before


def water(z=0.1, **info):
    a = Atoms("OH2", positions=[[0, 0, z], [0, 0.7, -0.5], [0, -0.7, -0.5]])
    a.info.update(energy=-10.5, **info)
    return a


# -- defect 3: cells ------------------------------------------------------------------------

@pytest.mark.parametrize("lattice, pbc", [
    ("nan 0 0 0 3 0 0 0 3", "T T T"),
    ("inf 0 0 0 3 0 0 0 3", "T T T"),
    ("3 0 0 0 -inf 0 0 0 3", "T T F"),
    ("3 0 0 0 3 0 0 0 nan", "F F F"),  # a molecule's cell is stored too
])
def test_non_finite_cell(seeded, nnp, capsys, tmp_path, lattice, pbc):
    refused(seeded, nnp, capsys, tmp_path, GOOD + frame(extra=cell(lattice), pbc=pbc),
            "cell vectors contain NaN or infinite values")


def test_nan_then_inf_cell_is_not_existing(seeded, nnp, capsys, tmp_path):
    """The report: a NaN cell was stored, then an inf cell hashed alike was 'existing'."""
    for value in ("nan", "inf"):
        refused(seeded, nnp, capsys, tmp_path,
                GOOD + frame(extra=cell(f"{value} 0 0 0 3 0 0 0 3"), pbc="T T T"),
                "cell vectors contain NaN")
    a = water()
    a.cell = np.diag([np.nan, 3.0, 3.0])
    a.pbc = True
    api_refused(seeded, [water(0.35), a], "frame 1: cell vectors contain NaN or infinite")


def test_non_finite_cell_in_hdf5(seeded, nnp, capsys, tmp_path):
    bad = tmp_path / "cells.h5"
    with h5py.File(bad, "w") as fh:
        g = fh.create_group("water")
        g["species"] = np.array([8, 1, 1])
        g["coordinates"] = np.random.default_rng(0).normal(size=(2, 3, 3))
        g["energies"] = np.array([-1.0, -2.0])
        g["cells"] = np.stack([np.eye(3) * 5, np.diag([5.0, np.inf, 5.0])])
        g["pbc"] = np.ones((2, 3), dtype=bool)
    capsys.readouterr()
    before = counts(seeded)
    assert nnp("ingest", bad, "--level", "pbe") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{bad} frame 1 (/water[1]): cell vectors contain NaN or infinite" in err, err
    assert counts(seeded) == before


@pytest.mark.parametrize("lattice, pbc", [
    ("1e300 0 0 0 1e300 0 0 0 1e300", "T T T"),
    ("1e16 0 0 0 3 0 0 0 3", "T T T"),
    ("0 0 0 0 0 0 0 0 1e300", "F F F"),
])
def test_huge_cell(seeded, nnp, capsys, tmp_path, lattice, pbc):
    refused(seeded, nnp, capsys, tmp_path, GOOD + frame(extra=cell(lattice), pbc=pbc),
            "cell vectors must be within ±1e14 Å", "0.0001 Å")


def test_degenerate_cells(seeded, nnp, capsys, tmp_path):
    # zero volume: the hash solves for fractional coordinates with the cell
    refused(seeded, nnp, capsys, tmp_path,
            GOOD + frame(extra=cell("3 0 0 0 3 0 3 3 0"), pbc="T T T"),
            "periodic cell has zero volume", "all three cell vectors must be independent")
    refused(seeded, nnp, capsys, tmp_path,
            GOOD + frame(extra=cell("0 0 0 0 0 0 0 0 0"), pbc="F F T"),
            "periodic cell has zero volume")
    # a slab whose nearly flat cell puts an atom far out along the non-periodic axis
    refused(seeded, nnp, capsys, tmp_path,
            GOOD + frame(z="1e9", extra=cell("1 0 0 0 1 0 1 0 1e-6"), pbc="T T F"),
            "positions along a non-periodic cell axis", "(is the cell nearly flat?)")


# -- defect 4: coordinates beyond the hash's integer grid -----------------------------------

@pytest.mark.parametrize("z, pbc, lattice", [
    ("1e300", "F F F", ""),
    ("1e16", "F F F", ""),
    ("-1e15", "F F F", ""),
    ("1e300", "T T T", cell("3 0 0 0 3 0 0 0 3")),
    ("1e16", "T T F", cell("3 0 0 0 3 0 0 0 3")),
])
def test_huge_coordinates(seeded, nnp, capsys, tmp_path, z, pbc, lattice):
    msg = refused(seeded, nnp, capsys, tmp_path, GOOD + frame(z=z, extra=lattice, pbc=pbc),
                  "positions must be within ±1e14 Å",
                  "(the identity hash rounds to 0.0001 Å on an int64 grid)")
    assert f"got {abs(float(z)):.6g}" in msg


def test_1e300_then_1e16_is_not_existing(seeded, nnp, capsys, tmp_path):
    """The report: O at z = 1e300 was stored, then z = 1e16 reported 'existing'."""
    for z in ("1e300", "1e16"):
        refused(seeded, nnp, capsys, tmp_path, GOOD + frame(z=z), "positions must be within")
    for z in (1e300, 1e16):
        api_refused(seeded, [water(0.35), water(z)], r"frame 1: positions must be within "
                                                     r"±1e14 Å")


def test_coordinate_bound_follows_the_grid():
    assert 2 * MAX_COORDINATE / TOLERANCE < 2 ** 63 / 2  # centred, then differences
    grid = np.rint(2 * MAX_COORDINATE / TOLERANCE)
    assert np.int64(grid) == grid


@pytest.mark.parametrize("z", ["1e4", "-2.5e4", "9e13"])
def test_large_valid_coordinates_round_trip(seeded, nnp, capsys, tmp_path, z):
    good = tmp_path / "far.xyz"
    good.write_text(frame(z=z) + frame(z=z, pbc="T T T", extra=cell("7 0 0 0 7 0 0 0 7"))
                    + frame(z=z, pbc="T T F", extra=cell("7 0 0 0 7 0 0 0 7")))
    assert nnp("ingest", good, "--level", "pbe") == 0
    assert counts(seeded) == (8, 8)
    capsys.readouterr()
    assert nnp("ingest", good, "--level", "pbe") == 0  # the same file: existing, not new
    assert counts(seeded) == (8, 8)
    s = seeded.ingest(ase.io.read(good, index=":"), "pbe")
    assert (s.structures_new, s.structures_existing) == (0, 3)


def test_large_valid_crystal_round_trips(seeded):
    a = crystal()
    far = a.copy()
    far.positions += 2778 * a.cell[0, 0]  # ~1e4 Å away: a periodic image of the same crystal
    assert seeded.ingest([far], None).structures_new == 1
    assert seeded.ingest([far], None).structures_existing == 1
    assert seeded.ingest([a], None).structures_existing == 1


# -- defects 12 and 7: charge and multiplicity ----------------------------------------------

@pytest.mark.parametrize("extra, expect", [
    ("charge=0.5", "charge 0.5 is not a whole number"),
    ("charge=-1.5", "charge -1.5 is not a whole number"),
    ("charge=T", "charge True is not a number"),
    ("charge=abc", "charge 'abc' is not a number"),
    ("multiplicity=2.5", "multiplicity 2.5 is not a whole number"),
    ("multiplicity=0", "multiplicity 0 is out of range; expected 1 to 32767"),
    ("multiplicity=-3", "multiplicity -3 is out of range"),
    ("spin=0.5", "spin 0.5 is not a whole number ('spin' is read as the number of unpaired"),
    ("spin=-2", "spin -2 is out of range; expected 0 to"),
])
def test_charge_and_multiplicity_must_be_whole(seeded, nnp, capsys, tmp_path, extra, expect):
    refused(seeded, nnp, capsys, tmp_path, GOOD + frame(extra=extra), expect)


@pytest.mark.parametrize("value", ["99999999999999999999", "40000", "-32769",
                                   "9223372036854775808"])
def test_charge_out_of_range(seeded, nnp, capsys, tmp_path, value):
    refused(seeded, nnp, capsys, tmp_path, GOOD + frame(extra=f"charge={value}"),
            "is out of range; expected -32768 to 32767")


def test_whole_charges_are_kept(seeded, nnp, capsys, tmp_path):
    from sqlalchemy import select

    from registry.store.schema import Structure

    ok = tmp_path / "ions.xyz"
    ok.write_text(frame(extra="charge=-1") + frame(extra="charge=2.0 multiplicity=3")
                  + frame(extra="spin=2"))
    assert nnp("ingest", ok, "--level", "pbe") == 0
    with seeded.session() as s:
        got = sorted(s.execute(select(Structure.charge, Structure.multiplicity)
                               .where((Structure.charge != 0) | (Structure.multiplicity != 1)))
                     .all())
    assert got == [(-1, 1), (0, 3), (2, 3)]


def test_charge_through_the_api(seeded):
    api_refused(seeded, [water(0.35), water(charge=0.5)], r"frame 1: charge 0.5 is not a whole")
    api_refused(seeded, [water(0.35), water(charge=np.float64(-0.25))], "charge -0.25")
    api_refused(seeded, [water(0.35), water(charge=2 ** 70)], "charge 1180591620717411303424 "
                                                               "is out of range")
    api_refused(seeded, [water(0.35), water(multiplicity=0)], "frame 1: multiplicity 0")
    api_refused(seeded, [water(0.35), water(spin=1.5)], "frame 1: spin 1.5")


def _batch(charge, mult):
    mols = [water(0.35), water(0.1)]
    return FrameBatch(numbers=np.concatenate([a.numbers for a in mols]),
                      positions=np.concatenate([a.positions for a in mols]),
                      offsets=np.array([0, 3, 6]), cells=np.zeros((2, 3, 3)),
                      pbc=np.zeros((2, 3), dtype=bool), charge=np.asarray(charge),
                      multiplicity=np.asarray(mult))


@pytest.mark.parametrize("charge, mult, expect", [
    ([0, 0.5], [1, 1], "frame 1: total charge 0.5 is not a whole number"),
    ([0, np.nan], [1, 1], "frame 1: total charge nan is not a whole number"),
    ([0, 1e300], [1, 1], "frame 1: total charge 1e+300 is out of range"),
    ([0, 2 ** 40], [1, 1], "frame 1: total charge 1099511627776 is out of range"),
    ([0, 2 ** 70], [1, 1], "frame 1: total charge 1180591620717411303424 is out of range"),
    ([0, 0], [1, 0], "frame 1: spin multiplicity 0 is out of range; expected 1 to 32767"),
    ([0, 0], [1, 2.5], "frame 1: spin multiplicity 2.5 is not a whole number"),
    ([0, 0], [True, True], "frame 0: spin multiplicity True is not a number"),
    ([0], [1, 1], "total charges: expected shape (2,), got (1,)"),
])
def test_frame_batch_charge_and_multiplicity(seeded, charge, mult, expect):
    before = counts(seeded), compositions(seeded)
    with pytest.raises(BadInput, match=re.escape(expect)):
        seeded.ingest_batch(_batch(charge, mult))
    assert (counts(seeded), compositions(seeded)) == before


def test_frame_batch_whole_floats_pass(seeded):
    s = seeded.ingest_batch(_batch([0.0, -1.0], [1.0, 2.0]))
    assert s.structures_new == 2


@pytest.mark.parametrize("key, values, expect", [
    ("total_charge", np.array([0.0, 0.5]), "total charge 0.5 is not a whole number"),
    ("total_charge", np.array([0, 1 << 40]), "total charge 1099511627776 is out of range"),
    ("multiplicity", np.array([1, 0]), "spin multiplicity 0 is out of range"),
    ("multiplicity", np.array([1.0, 1.5]), "spin multiplicity 1.5 is not a whole number"),
])
def test_charge_and_multiplicity_in_hdf5(seeded, nnp, capsys, tmp_path, key, values, expect):
    bad = tmp_path / "ions.h5"
    with h5py.File(bad, "w") as fh:
        g = fh.create_group("water")
        g["species"] = np.array([8, 1, 1])
        g["coordinates"] = np.random.default_rng(0).normal(size=(2, 3, 3))
        g["energies"] = np.array([-1.0, -2.0])
        g[key] = values
    capsys.readouterr()
    before = counts(seeded), compositions(seeded)
    assert nnp("ingest", bad, "--level", "pbe") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{bad} frame 1 (/water[1]): {expect}" in err, err
    assert "Traceback" not in err
    assert (counts(seeded), compositions(seeded)) == before


def test_hdf5_charge_dataset_of_wrong_kind(seeded, nnp, capsys, tmp_path):
    bad = tmp_path / "ions.h5"
    with h5py.File(bad, "w") as fh:
        g = fh.create_group("water")
        g["species"] = np.array([8, 1, 1])
        g["coordinates"] = np.zeros((2, 3, 3)) + np.arange(3)[:, None]
        g["energies"] = np.array([-1.0, -2.0])
        g["total_charge"] = np.array([b"0", b"1"])
        g["multiplicity"] = 1
    capsys.readouterr()
    assert nnp("ingest", bad, "--level", "pbe") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "/water: total_charge has dtype |S1, expected numbers" in err, err
    with h5py.File(bad, "a") as fh:
        del fh["water/total_charge"]
    assert nnp("ingest", bad, "--level", "pbe") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "/water: multiplicity has shape (), expected (2,)" in err, err
    assert counts(seeded) == (5, 5)
