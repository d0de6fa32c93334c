"""Every bad input of issue 3 through ``nnp ingest``: a clear error naming the problem (and
the file / frame), exit status 2, and no rows written, on both backends."""

from __future__ import annotations

import ase.io
import h5py
import numpy as np
import pytest
from helpers import counts, labelled_molecules

GOOD = """3
Properties=species:S:1:pos:R:3 energy=-10.5 pbc="F F F"
O 0.0 0.0 0.1
H 0.0 0.7 -0.5
H 0.0 -0.7 -0.5
"""


def frame(energy="-10.5", symbol="O", dx=0.0, extra=""):
    return (f'3\nProperties=species:S:1:pos:R:3 energy={energy} {extra}pbc="F F F"\n'
            f"{symbol} 0.0 0.0 {0.1 + dx}\nH 0.0 0.7 -0.5\nH 0.0 -0.7 -0.5\n")


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


def refused(reg, nnp, capsys, *args, expect=()):
    """Run ``nnp ingest ARGS``; assert exit 2, every ``expect`` text in the error, no rows
    (compositions included: they are created while the input is checked, then rolled back)."""
    capsys.readouterr()
    before = counts(reg), compositions(reg)
    code = nnp("ingest", *args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error:" in err, err
    flat = " ".join(err.split())
    for text in expect:
        assert text in flat, (text, flat)
    assert (counts(reg), compositions(reg)) == before
    return flat


def write(path, text):
    path.write_text(text)
    return path


def test_malformed_extxyz(seeded, nnp, capsys, tmp_path):
    bad = write(tmp_path / "bad.xyz", GOOD + "3\ncomment\nO 0 0\nH 0 0 1\nH 1 0 0\n")
    refused(seeded, nnp, capsys, bad, "--level", "pbe",
            expect=(f"{bad} frame 1", "malformed atom line"))
    bad2 = write(tmp_path / "bad2.xyz", GOOD + "seven\n")
    refused(seeded, nnp, capsys, bad2, expect=(f"{bad2} frame 1", "expected an atom count"))
    bad3 = write(tmp_path / "bad3.xyz", frame(energy="abc"))
    refused(seeded, nnp, capsys, bad3, "--level", "pbe",
            expect=(f"{bad3} frame 0", "energy 'abc' is not a number"))
    cut = write(tmp_path / "cut.xyz", GOOD + "\n".join(GOOD.splitlines()[:4]) + "\n")
    refused(seeded, nnp, capsys, cut, expect=(f"{cut} frame 1", "truncated"))
    ase_db = write(tmp_path / "notes.db", "just text, not SQLite\n" * 10)
    refused(seeded, nnp, capsys, ase_db, expect=(str(ase_db), "not an ASE database"))


def test_empty_file(seeded, nnp, capsys, tmp_path):
    for name in ("empty.xyz", "empty.traj", "empty.h5", "empty.db"):
        bad = write(tmp_path / name, "")
        refused(seeded, nnp, capsys, bad, "--level", "pbe", expect=(str(bad), "empty file"))
    blank = write(tmp_path / "blank.xyz", "\n\n")
    refused(seeded, nnp, capsys, blank, expect=(str(blank), "no frames"))


def test_nan_or_infinite_energy(seeded, nnp, capsys, tmp_path):
    for value in ("nan", "inf", "-inf"):
        bad = write(tmp_path / "nan.xyz", frame() + frame(energy=value, dx=0.2))
        refused(seeded, nnp, capsys, bad, "--level", "pbe",
                expect=(f"{bad} frame 1", "energy contain NaN or infinite"))
    bad = tmp_path / "nan.h5"
    with h5py.File(bad, "w") as fh:
        g = fh.create_group("mols/water")
        g["species"] = np.array([b"O", b"H", b"H"])
        g["coordinates"] = np.random.default_rng(0).normal(size=(2, 3, 3))
        g["energies"] = np.array([-1.0, np.nan])
    refused(seeded, nnp, capsys, bad, "--level", "pbe",
            expect=(f"{bad} frame 1 (/mols/water[1])", "NaN or infinite"))


def test_forces_shape_mismatch(seeded, nnp, capsys, tmp_path):
    bad = tmp_path / "forces.h5"
    with h5py.File(bad, "w") as fh:
        g = fh.create_group("water")
        g["species"] = np.array([8, 1, 1])
        g["coordinates"] = np.random.default_rng(0).normal(size=(2, 3, 3))
        g["energies"] = np.array([-1.0, -2.0])
        g["forces"] = np.zeros((2, 4, 3))
    refused(seeded, nnp, capsys, bad, "--level", "pbe",
            expect=(str(bad), "/water", "forces has shape (2, 4, 3), expected (2, 3, 3)"))
    from registry.errors import BadInput

    a = labelled_molecules()[0]
    a.arrays["fx"] = np.zeros((len(a), 2))
    with pytest.raises(BadInput, match=r"frame 0: forces have shape \(3, 2\), expected"):
        seeded.ingest([a], "pbe", forces_key="fx")
    assert counts(seeded) == (5, 5)


def test_unknown_element(seeded, nnp, capsys, tmp_path):
    bad = write(tmp_path / "xx.xyz", frame() + frame(symbol="Xx", dx=0.3))
    refused(seeded, nnp, capsys, bad, expect=(f"{bad} frame 1", "unknown element 'Xx'"))
    bad_h5 = tmp_path / "xx.h5"
    with h5py.File(bad_h5, "w") as fh:
        fh["m/species"] = np.array([b"Xx", b"H"])
        fh["m/coordinates"] = np.zeros((1, 2, 3))
    refused(seeded, nnp, capsys, bad_h5, expect=(str(bad_h5), "unknown element 'Xx'"))
    bad_z = tmp_path / "z.h5"
    with h5py.File(bad_z, "w") as fh:
        fh["m/species"] = np.array([200, 1])
        fh["m/coordinates"] = np.array([[[0, 0, 0], [0, 0, 1.0]]])
    refused(seeded, nnp, capsys, bad_z, expect=(f"{bad_z} frame 0", "unknown element",
                                                "atomic number 200"))


def test_periodic_cell_with_zero_volume(seeded, nnp, capsys, tmp_path):
    bad = write(tmp_path / "flat.xyz",
                '1\nLattice="3.0 0.0 0.0 0.0 3.0 0.0 3.0 3.0 0.0" '
                'Properties=species:S:1:pos:R:3 energy=-1.0 pbc="T T T"\nCu 0.0 0.0 0.0\n')
    refused(seeded, nnp, capsys, bad, "--level", "pbe",
            expect=(f"{bad} frame 0", "periodic cell has zero volume"))


def test_one_bad_frame_refuses_the_whole_batch(seeded, nnp, capsys, tmp_path):
    frames = "".join(frame(energy=str(-10.0 - k), dx=0.05 * (k + 1)) for k in range(4))
    frames += frame(energy="nan", dx=0.5) + frame(energy="-3.0", dx=0.6)
    bad = write(tmp_path / "batch.xyz", frames)
    refused(seeded, nnp, capsys, bad, "--level", "pbe", "--batch-size", "2",
            expect=(f"{bad} frame 4", "NaN"))
    # also when the bad frame is in a second file of the same command
    good = write(tmp_path / "good.xyz", frame(energy="-1.0", dx=0.9))
    refused(seeded, nnp, capsys, good, bad, "--level", "pbe", expect=(f"{bad} frame 4",))


def test_conflicting_labels_inside_one_file(seeded, nnp, capsys, tmp_path):
    # a composition the registry does not hold yet (SH2): created meanwhile, then rolled back
    bad = write(tmp_path / "conflict.xyz", frame(energy="-1.0", symbol="S")
                + frame(energy="-2.0", symbol="S"))
    refused(seeded, nnp, capsys, bad, "--level", "pbe",
            expect=("conflicting pbe labels for one structure inside the input",
                    f"{bad} frame 0", f"{bad} frame 1"))


def test_unknown_units_and_missing_file(seeded, nnp, capsys, tmp_path):
    missing = tmp_path / "never-read.xyz"  # not even created: units are checked first
    refused(seeded, nnp, capsys, missing, "--level", "pbe", "--units", "furlongs",
            expect=("unknown energy unit 'furlongs'", "hartree"))
    refused(seeded, nnp, capsys, tmp_path / "nope.xyz", expect=("nope.xyz: no such file",))


def test_truncated_hdf5(seeded, nnp, capsys, tmp_path):
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as fh:
        g = fh.create_group("water")
        g["species"] = np.array([b"O", b"H", b"H"])
        g["coordinates"] = np.random.default_rng(0).normal(size=(50, 3, 3))
        g["energies"] = np.arange(50.0)
    data = good.read_bytes()
    bad = tmp_path / "cut.h5"
    bad.write_bytes(data[: len(data) // 2])
    refused(seeded, nnp, capsys, bad, "--level", "pbe",
            expect=(str(bad), "cannot read HDF5", "truncated"))


def test_unreachable_database(seeded, nnp, capsys, tmp_path, monkeypatch):
    good = write(tmp_path / "good.xyz", frame())
    monkeypatch.setenv("NNP_DATABASE_URL",
                       "postgresql+psycopg://postgres:postgres@127.0.0.1:1/nnp")
    capsys.readouterr()
    assert nnp("ingest", good, "--level", "pbe") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot reach database postgresql+psycopg://postgres:***@127.0.0.1:1/nnp" in err
    assert counts(seeded) == (5, 5)


def test_unopenable_sqlite_path(nnp, capsys, tmp_path, monkeypatch):
    blocker = write(tmp_path / "a-file", "x")
    good = write(tmp_path / "good.xyz", frame())
    monkeypatch.setenv("NNP_DATABASE_URL", f"sqlite:///{blocker}/sub/registry.db")
    assert nnp("ingest", good, "--level", "pbe") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot" in err and str(blocker) in err
    assert not (tmp_path / "a-file" / "sub").exists()
