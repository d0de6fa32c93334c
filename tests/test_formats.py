"""More real formats (issue 18): fairchem's ASE-LMDB (written by ase-db-backends' own writer)
and MPtrj-style JSON, ingested through ``nnp ingest`` on both backends."""

from __future__ import annotations

import json

import ase.db
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa
from helpers import counts, crystal, labelled_molecules

from registry.io.readers import detect_format


def stored(reg, level):
    """{n_atoms: (energy, forces, stress, charge, multiplicity)} of the labelled structures."""
    out = {}
    for b in reg.iter_frames([level], labelled_only=True):
        c = b.labels[level]
        for i in range(len(b)):
            lo, hi = b.offsets[i], b.offsets[i + 1]
            out[int(b.n_atoms[i])] = (
                float(c.energy[i]), c.forces[lo:hi] if c.forces is not None else None,
                c.stress[i] if c.stress is not None else None, int(b.charge[i]),
                int(b.multiplicity[i]))
    return out


def test_aselmdb_round_trip(registry, nnp, tmp_path):
    path = tmp_path / "omat.aselmdb"
    rng = np.random.default_rng(4)
    written = {}
    with ase.db.connect(path, type="aselmdb") as db:  # ase-db-backends' LMDB writer
        for k, a in enumerate([crystal(), *labelled_molecules(("H2O", "CH4"))]):
            a = a.copy()
            forces = rng.normal(size=(len(a), 3))
            stress = rng.normal(size=6) if a.pbc.any() else None
            a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=forces, stress=stress)
            kvp = {"sid": k}
            if k == 2:
                kvp.update(total_charge=1, multiplicity=2)
            db.write(a, **kvp)
            written[len(a)] = (-10.0 - k, forces, stress, kvp.get("total_charge", 0),
                               kvp.get("multiplicity", 1))
    assert detect_format(path) == "aselmdb"
    assert nnp("ingest", path, "--level", "pbe") == 0
    got = stored(registry, "pbe")
    assert got.keys() == written.keys()
    for n, (energy, forces, stress, charge, mult) in written.items():
        e, f, s, q, m = got[n]
        assert (e, q, m) == (energy, charge, mult)
        assert sorted(map(tuple, f)) == sorted(map(tuple, forces))  # atoms are re-ordered
        assert (s is None or np.isnan(s).all()) if stress is None else np.array_equal(s, stress)
    assert nnp("ingest", path, "--level", "pbe") == 0  # nothing new the second time
    assert counts(registry) == (3, 3)


def mptrj_frame(atoms, energy, forces, stress_kbar, mp_id):
    """A frame as MPtrj holds it: a pymatgen Structure.as_dict() and VASP's outputs."""
    return {
        "structure": {
            "@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0,
            "lattice": {"matrix": atoms.cell.array.tolist(), "pbc": [True, True, True]},
            "properties": {},
            "sites": [{"species": [{"element": s, "occu": 1}], "xyz": p.tolist(),
                       "abc": f.tolist(), "label": s, "properties": {"magmom": 0.0}}
                      for s, p, f in zip(atoms.get_chemical_symbols(), atoms.positions,
                                         atoms.get_scaled_positions(), strict=True)]},
        "uncorrected_total_energy": energy, "corrected_total_energy": energy - 0.5,
        "energy_per_atom": energy / len(atoms), "ef_per_atom": -0.1, "force": forces.tolist(),
        "stress": stress_kbar.tolist(), "magmom": [0.0] * len(atoms), "bandgap": 0.0,
        "mp_id": mp_id}


def test_mptrj_json(registry, nnp, tmp_path):
    rng = np.random.default_rng(7)
    cu, cu2 = crystal(), crystal(seed=3) * (1, 1, 2)
    frames, expect = {}, {}
    for k, atoms in enumerate((cu, cu2)):
        forces = rng.normal(size=(len(atoms), 3))
        kbar = rng.normal(size=(3, 3))
        kbar = kbar + kbar.T
        frames[f"mp-{k}"] = {f"mp-{k}-0-0": mptrj_frame(atoms, -20.0 * (k + 1), forces, kbar,
                                                         f"mp-{k}")}
        voigt = (-0.1 * GPa * kbar)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        expect[len(atoms)] = (-20.0 * (k + 1), forces, voigt)
    path = tmp_path / "MPtrj_sample.json"
    path.write_text(json.dumps(frames))
    assert detect_format(path) == "mptrj-json"
    assert nnp("ingest", path, "--level", "pbe+u") == 0
    got = stored(registry, "pbe+u")
    for n, (energy, forces, voigt) in expect.items():
        e, f, s, _, _ = got[n]
        assert e == energy
        assert sorted(map(tuple, f)) == sorted(map(tuple, forces))
        np.testing.assert_allclose(s, voigt, rtol=1e-12)
    # the MP2020-corrected energy as another level, forces and stress named explicitly
    assert nnp("ingest", path, "--level", "pbe+u-mp2020", "--energy-key",
               "corrected_total_energy", "--forces-key", "forces", "--stress-key",
               "stress") == 0
    got = stored(registry, "pbe+u-mp2020")
    assert sorted(v[0] for v in got.values()) == [-40.5, -20.5]
    assert all(v[1] is not None and v[2] is not None for v in got.values())
    assert counts(registry) == (2, 4)
