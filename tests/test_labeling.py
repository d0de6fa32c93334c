"""Labelers: each reference calculator gives eV / eV/Å labels, records its level, fails with
a LabelFailure that says why, and pickles into Dask tasks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.units import Hartree

from pipelines.labeling import LabelFailure, get_labeler
from registry.errors import BadInput


def h2(d=0.74):
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, d]])


def fd_force(labeler, atoms, atom, axis, h=1e-3):
    """−dE/dx by central differences."""
    energies = []
    for sign in (1, -1):
        a = atoms.copy()
        a.positions[atom, axis] += sign * h
        energies.append(labeler.label(a)["energy"])
    return -(energies[0] - energies[1]) / (2 * h)


def test_gfn2_xtb_water_energy_forces_and_level():
    lab = get_labeler("GFN2-xTB")
    water = molecule("H2O")
    water.positions[0] += [0.02, -0.03, 0.01]
    out = lab.label(water)
    assert out["forces"].shape == (3, 3)
    # eV (about -5.07 Eh for water), forces the negative gradient
    assert out["energy"] / Hartree == pytest.approx(-5.07, abs=0.02)
    assert out["forces"][0, 1] == pytest.approx(fd_force(lab, water, 0, 1), abs=2e-3)
    assert lab.level["name"] == "gfn2-xtb" and lab.level["program"] == "tblite"
    assert lab.level["program_version"] and lab.properties == ("energy", "forces")


def test_labels_are_true_forces_whatever_the_frames_constraints():
    """A frame that carries ASE constraints (a fixed atom, FixCom from MD) is labelled with
    the calculator's forces, not the constrained ones; md_sample stores the same."""
    from ase.constraints import FixAtoms, FixCom

    from pipelines.simulation.md import md_sample

    methanol = molecule("CH3OH")
    methanol.positions[1] += [0.05, 0.02, -0.04]
    for spec in ("emt", "gfn2-xtb"):
        lab = get_labeler(spec)
        free = lab.label(methanol)["forces"]
        for constraint in (FixAtoms(indices=[0]), FixCom()):
            held = methanol.copy()
            held.set_constraint(constraint)
            assert np.allclose(lab.label(held)["forces"], free, atol=1e-9), (spec, constraint)
    lab = get_labeler("emt")
    for frame in md_sample("CH3OH", 3, 600.0, seed=4, level="emt", interval=4):
        relabelled = lab.label(frame)
        assert relabelled["energy"] == pytest.approx(frame.info["energy"], abs=1e-9)
        assert np.allclose(frame.arrays["forces"], relabelled["forces"], atol=1e-9)
        assert np.abs(frame.arrays["forces"].sum(axis=0)).max() < 1e-6  # no net force


def test_pyscf_hf_h2_matches_the_textbook_value_and_finite_differences():
    lab = get_labeler("pyscf:HF/STO-3G")
    out = lab.label(h2())
    # RHF/STO-3G H2 at 0.74 Å: -1.1167 Eh (Szabo & Ostlund)
    assert out["energy"] / Hartree == pytest.approx(-1.1167, abs=2e-4)
    assert out["forces"][1, 2] == pytest.approx(fd_force(lab, h2(), 1, 2), abs=1e-4)
    assert out["forces"].sum(axis=0) == pytest.approx(np.zeros(3), abs=1e-8)
    assert lab.level == {"name": "hf/sto-3g", "method": "hf", "basis": "sto-3g",
                         "program": "pyscf", "program_version": lab.level["program_version"],
                         "keywords": None}


def test_pyscf_dft_wb97x_forces_and_keywords():
    lab = get_labeler("pyscf:wb97x/sto-3g")
    out = lab.label(h2(0.8))
    assert out["forces"][1, 2] == pytest.approx(fd_force(lab, h2(0.8), 1, 2), abs=5e-4)
    assert lab.level["name"] == "wb97x/sto-3g"
    assert lab.level["keywords"] == {"grid_level": 3}
    hf = get_labeler("pyscf:hf/sto-3g").label(h2(0.8))["energy"]
    assert out["energy"] != pytest.approx(hf, abs=0.01)  # a functional, not HF again


def test_ccsd_t_water_energy_only_and_refusals():
    lab = get_labeler("pyscf:ccsd(t)/sto-3g")
    water = molecule("H2O")
    out = lab.label(water)
    hf = get_labeler("pyscf:hf/sto-3g").label(water)["energy"]
    # correlation lowers the energy by some tens of mEh in STO-3G
    assert -0.1 < (out["energy"] - hf) / Hartree < -0.02
    assert out["forces"] is None and lab.properties == ("energy",)
    assert lab.level["method"] == "ccsd(t)" and lab.level["name"] == "ccsd(t)/sto-3g"
    # a labelled copy keeps no forces from another level
    water.arrays["forces"] = np.ones((3, 3))
    copy = lab.labelled(water)
    assert copy.info["energy"] == pytest.approx(out["energy"], abs=1e-8)
    assert "forces" not in copy.arrays
    with pytest.raises(LabelFailure, match="open shell"):
        lab.label(molecule("OH"))
    with pytest.raises(LabelFailure, match="periodic"):
        lab.label(bulk("Al", "fcc", a=4.05))


def test_failures_say_why():
    water = molecule("H2O")
    tight = get_labeler("pyscf:hf/sto-3g", max_cycle=1, conv_tol=1e-12)
    with pytest.raises(LabelFailure, match="SCF not converged in 1 cycles"):
        tight.label(water)
    with pytest.raises(LabelFailure, match="unsupported element Xe for basis 6-31g"):
        get_labeler("pyscf:hf/6-31g*").label(Atoms("Xe", positions=[[0, 0, 0]]))
    with pytest.raises(LabelFailure, match="unsupported element Si for EMT"):
        get_labeler("emt").label(bulk("Si"))
    with pytest.raises(LabelFailure, match="inconsistent"):
        odd = h2()
        odd.info["multiplicity"] = 2
        get_labeler("gfn2-xtb").label(odd)


@pytest.mark.parametrize("spec, message", [
    ("dft", "unknown labeler spec 'dft'; available: emt, gfn2-xtb, gfn1-xtb, pyscf:XC/BASIS"),
    ("pyscf:nosuch/sto-3g", "knows no functional 'nosuch'"),
    ("pyscf:hf/nosuch", "knows no basis set 'nosuch'"),
    ("pyscf:wb97x", "must read pyscf:METHOD/BASIS"),
    ("", "non-empty"),
])
def test_bad_specs_are_refused_before_any_work(spec, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace("*", r"\*")):
        get_labeler(spec)


def test_bad_option_is_bad_input():
    with pytest.raises(BadInput, match="max_cycles"):
        get_labeler("pyscf:hf/sto-3g", max_cycles=3)


def test_emt_on_periodic_aluminium_equals_ase():
    from ase.calculators.emt import EMT

    al = bulk("Al", "fcc", a=4.05, cubic=True)
    al.positions[0] += [0.05, 0.0, -0.03]
    out = get_labeler("emt").label(al)
    al.calc = EMT()
    assert out["energy"] == pytest.approx(al.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(out["forces"], al.get_forces(), atol=1e-12)


def test_labelers_pickle_and_give_the_same_labels():
    water = molecule("H2O")
    for spec in ("emt", "gfn1-xtb", "pyscf:hf/sto-3g"):
        lab = get_labeler(spec)
        lab.label(water)  # any program state built by a call must not break pickling
        again = pickle.loads(pickle.dumps(lab))
        assert again.level == lab.level
        assert again.label(water)["energy"] == pytest.approx(lab.label(water)["energy"],
                                                             abs=1e-8)


def test_make_calculator_still_maps_levels_to_ase_calculators():
    from pipelines.simulation.calculators import (
        CALCULATORS,
        calculator_info,
        make_calculator,
    )

    assert list(CALCULATORS) == ["emt", "gfn2-xtb", "gfn1-xtb"]
    assert type(make_calculator("gfn2-xtb")).__name__ == "TBLite"
    assert calculator_info("emt")["program"] == "ase"
    a = h2()
    a.calc = make_calculator("pyscf:hf/sto-3g")
    assert a.get_potential_energy() == pytest.approx(
        get_labeler("pyscf:hf/sto-3g").label(h2())["energy"], abs=1e-8)
    with pytest.raises(BadInput, match="available: emt"):
        make_calculator("ccsd(t)/cc-pvdz")


def test_labels_and_level_land_in_the_registry(registry):
    lab = get_labeler("pyscf:hf/sto-3g")
    frames = [lab.labelled(h2(d)) for d in (0.70, 0.74, 0.78)]
    level = lab.ensure_level(registry)
    assert (level["name"], level["program"], level["basis"]) == ("hf/sto-3g", "pyscf",
                                                                  "sto-3g")
    assert level["program_version"] == lab.level["program_version"]
    summary = registry.ingest(frames, level=level["name"])
    assert summary.labels_new == 3
    assert lab.ensure_level(registry)["id"] == level["id"]  # created once
