"""Readers: ASE .db, .traj, ANI HDF5 (nested groups, symbols or numbers, hartree, NaN =
missing), key companions; ingested on both backends."""

from __future__ import annotations

import ase.db
import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Hartree
from helpers import counts, crystal, labelled_molecules

from registry.io.atoms import companion_key
from registry.io.readers import ReadOptions, detect_format, read_file


def test_companion_keys():
    assert companion_key("energy_wb97x", "forces") == "forces_wb97x"
    assert companion_key("wb97x_dz.energy", "forces") == "wb97x_dz.forces"
    assert companion_key("energies_ccsd", "dipole") == "dipoles_ccsd"
    assert companion_key("energy", "forces") is None  # plain default (incl. the calculator)
    assert companion_key(None, "stress") is None
    assert companion_key("E_dft", "forces") is None


def test_detect_format(tmp_path):
    assert [detect_format(f"x{ext}") for ext in (".xyz", ".extxyz", ".db", ".traj", ".h5",
                                                 ".hdf5")] == \
        ["extxyz", "extxyz", "ase-db", "traj", "ani-h5", "ani-h5"]
    p = tmp_path / "POSCAR"
    ase.io.write(p, crystal(), format="vasp")
    assert detect_format(p) == "vasp"


def test_extxyz_two_levels_frame_names(tmp_path):
    frames = labelled_molecules(level_suffix="_wb97x")
    frames[1].info["energy_ccsd"] = 1.5
    p = tmp_path / "m.xyz"
    ase.io.write(p, frames, format="extxyz")
    (batch,), skipped = read_file(p, ReadOptions("ccsd", energy_key="energy_ccsd",
                                                 skip_missing=True))
    assert skipped == 4 and len(batch) == 1 and batch.frame_names == [f"{p} frame 1"]
    assert batch.labels["ccsd"].energy.tolist() == [1.5]
    assert batch.labels["ccsd"].forces is None  # forces_ccsd absent: no forces, no error
    (batch,), _ = read_file(p, ReadOptions("wb97x", energy_key="energy_wb97x"))
    back = ase.io.read(p, ":")  # ASE's writer rounds to 8 decimals
    np.testing.assert_array_equal(batch.labels["wb97x"].forces,
                                  np.concatenate([a.arrays["forces_wb97x"] for a in back]))


def test_ase_db_and_traj(registry, tmp_path):
    mols = labelled_molecules()
    db_path, traj_path = tmp_path / "m.db", tmp_path / "m.traj"
    with ase.db.connect(db_path) as db:
        for a in mols[:3]:
            b = a.copy()
            b.calc = SinglePointCalculator(b, energy=a.info["energy"],
                                           forces=a.arrays["forces"])
            db.write(b, total_charge=0, multiplicity=1)
        ion = mols[3].copy()  # a charged doublet with a second level as key/data
        db.write(ion, total_charge=-1, multiplicity=2, energy_mp2=-7.25,
                 data={"forces_mp2": np.ones((len(ion), 3))})
    traj = []
    for a in mols[3:]:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.info["energy"], forces=a.arrays["forces"])
        traj.append(b)
    ase.io.write(traj_path, traj)
    s = registry.ingest_files([db_path, traj_path], "pbe", skip_missing=True)
    assert (s.structures_new, s.labels_new, s.frames_skipped) == (5, 5, 1)
    s = registry.ingest_files([db_path], "mp2", energy_key="energy_mp2", skip_missing=True)
    assert (s.structures_new, s.structures_existing, s.labels_new) == (1, 0, 1)
    assert counts(registry) == (6, 6)  # the ion is new: charge -1, multiplicity 2
    batch = next(registry.iter_frames(["mp2"], labelled_only=True))
    assert batch.charge.tolist() == [-1] and batch.multiplicity.tolist() == [2]
    assert (batch.labels["mp2"].forces == 1.0).all()
    assert batch.labels["mp2"].energy.tolist() == [-7.25]


def _ani_file(path, nested=True):
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as fh:
        root = fh.create_group("gdb11_s01") if nested else fh
        g = root.create_group("gdb11_s01-0")
        g["species"] = np.array([b"C", b"H", b"H", b"H", b"H"])
        g["coordinates"] = rng.normal(size=(3, 5, 3)).astype(np.float32)
        g["energies"] = np.array([-40.1, -40.2, -40.3])
        g["forces"] = rng.normal(size=(3, 5, 3))
        g["ccsd(t)_cbs.energy"] = np.array([-40.5, np.nan, -40.6])
        h = fh.create_group("other/deeper/water")
        h["atomic_numbers"] = np.array([8, 1, 1])
        h["coordinates"] = rng.normal(size=(2, 3, 3))
        h["energies"] = np.array([-76.0, -76.1])
        h["forces"] = rng.normal(size=(2, 3, 3))


def test_ani_hdf5(registry, tmp_path):
    p = tmp_path / "ani.h5"
    _ani_file(p)
    s = registry.ingest_files([p], "wb97x/6-31g(d)", units="hartree")
    assert (s.structures_new, s.labels_new) == (5, 5)
    batch = next(registry.iter_frames())
    energies = np.sort(batch.labels["wb97x/6-31g(d)"].energy)
    np.testing.assert_array_equal(energies, np.sort(np.array(
        [-40.1, -40.2, -40.3, -76.0, -76.1]) * Hartree))
    assert sorted(batch.n_atoms.tolist()) == [3, 3, 5, 5, 5]
    # ANI-1x style key; NaN = no value at that level -> skipped with --skip-missing
    s = registry.ingest_files([p], "ccsd(t)/cbs", units="hartree",
                              energy_key="ccsd(t)_cbs.energy", skip_missing=True)
    assert (s.labels_new, s.frames_skipped, s.structures_existing) == (2, 3, 2)
    assert counts(registry) == (5, 7)


def test_ani_hdf5_units_are_never_guessed(tmp_path):
    p = tmp_path / "ani.h5"
    _ani_file(p, nested=False)
    batches, _ = read_file(p, ReadOptions("x"))
    energies = np.concatenate([b.labels["x"].energy for b in batches])
    assert sorted(energies.tolist()) == [-76.1, -76.0, -40.3, -40.2, -40.1]  # eV as given


def test_ani_hdf5_missing_energies_dataset(tmp_path):
    from registry.errors import BadInput

    p = tmp_path / "ani.h5"
    _ani_file(p)
    with pytest.raises(BadInput, match=r"group /gdb11_s01/gdb11_s01-0: missing 'dft.energy'"):
        read_file(p, ReadOptions("x", energy_key="dft.energy"))
    with pytest.raises(BadInput, match="no frames to ingest"):
        read_file(p, ReadOptions("x", energy_key="dft.energy", skip_missing=True))


def test_ani_hdf5_nan_with_skip_missing(registry, tmp_path):
    p = tmp_path / "nan.h5"
    with h5py.File(p, "w") as fh:
        fh["w/species"] = np.array([b"O", b"H", b"H"])
        fh["w/coordinates"] = np.random.default_rng(0).normal(size=(3, 3, 3))
        fh["w/energies"] = np.array([-1.0, np.nan, -3.0])
    s = registry.ingest_files([p], "pbe", skip_missing=True)
    assert (s.structures_new, s.labels_new, s.frames_skipped) == (2, 2, 1)
