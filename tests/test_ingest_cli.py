"""``nnp ingest`` / ``nnp stats`` on both backends: multi-level extxyz, re-ingest, conflicts,
provenance of the input files."""

from __future__ import annotations

import hashlib
import json

import ase.io
import numpy as np
from helpers import counts, crystal, labelled_molecules

SUMMARY_KEYS = {"structures_new", "structures_existing", "labels_new", "labels_existing",
                "labels_conflicting", "frames_skipped"}


def two_level_file(path, n_cheap=5):
    """extxyz: every frame has energy_wb97x/forces_wb97x; the first two also energy_ccsd."""
    frames = labelled_molecules(level_suffix="_wb97x")[:n_cheap]
    rng = np.random.default_rng(1)
    for a in frames[:2]:
        a.info["energy_ccsd"] = float(rng.normal(-100, 1))
        a.arrays["forces_ccsd"] = rng.normal(size=(len(a), 3))
    c = crystal()
    c.info["energy_wb97x"] = -12.5
    c.arrays["forces_wb97x"] = np.zeros((len(c), 3))
    frames.append(c)
    ase.io.write(path, frames, format="extxyz")
    return frames


def run_json(nnp, capsys, *args):
    capsys.readouterr()
    code = nnp(*args, "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_two_levels_skip_missing_and_reingest(registry, nnp, capsys, tmp_path):
    f = tmp_path / "multi.xyz"
    two_level_file(f)
    s = run_json(nnp, capsys, "ingest", f, "--level", "wB97X/6-31G*", "--energy-key",
                 "energy_wb97x")
    assert SUMMARY_KEYS <= set(s)
    assert (s["structures_new"], s["labels_new"], s["frames_skipped"]) == (6, 6, 0)
    s = run_json(nnp, capsys, "ingest", f, "--level", "ccsd(t)/cc-pvdz", "--energy-key",
                 "energy_ccsd", "--skip-missing")
    assert (s["structures_new"], s["structures_existing"], s["labels_new"],
            s["frames_skipped"]) == (0, 2, 2, 4)
    assert counts(registry) == (6, 8)
    # forces followed the energy key: ccsd forces are the ccsd ones, not wb97x's
    frames = ase.io.read(f, ":")
    batch = next(registry.iter_frames(["ccsd(t)/cc-pvdz"], labelled_only=True))
    stored = np.sort(batch.labels["ccsd(t)/cc-pvdz"].forces.ravel())
    expect = np.sort(np.concatenate([a.arrays["forces_ccsd"].ravel() for a in frames[:2]]))
    np.testing.assert_allclose(stored, expect)
    # the same file again adds nothing
    for args in (("--level", "wb97x/6-31g*", "--energy-key", "energy_wb97x"),
                 ("--level", "ccsd(t)/cc-pvdz", "--energy-key", "energy_ccsd",
                  "--skip-missing")):
        s = run_json(nnp, capsys, "ingest", f, *args)
        assert s["structures_new"] == s["labels_new"] == s["labels_conflicting"] == 0
        assert s["labels_existing"] == s["frames_read"]
    assert counts(registry) == (6, 8)


def test_missing_key_without_skip_is_an_error_naming_the_frame(registry, nnp, capsys,
                                                               tmp_path):
    f = tmp_path / "multi.xyz"
    two_level_file(f)
    assert nnp("ingest", f, "--level", "ccsd/cc-pvdz", "--energy-key", "energy_ccsd") == 2
    err = capsys.readouterr().err
    assert f"{f} frame 2" in err and "energy_ccsd" in err and "--skip-missing" in err
    assert counts(registry) == (0, 0)


def test_conflict_is_reported_not_written(registry, nnp, capsys, tmp_path):
    frames = labelled_molecules()
    ase.io.write(tmp_path / "a.xyz", frames, format="extxyz")
    run_json(nnp, capsys, "ingest", tmp_path / "a.xyz", "--level", "pbe")
    before = {r: e for r, e in _energies(registry)}
    for a in frames[:2]:
        a.info["energy"] += 1.0
    ase.io.write(tmp_path / "b.xyz", frames, format="extxyz")
    s = run_json(nnp, capsys, "ingest", tmp_path / "b.xyz", "--level", "pbe")
    assert (s["labels_conflicting"], s["labels_existing"], s["labels_new"]) == (2, 3, 0)
    assert {c["level"] for c in s["conflicts"]} == {"pbe"}
    assert counts(registry) == (5, 5)
    assert dict(_energies(registry)) == before
    # the human-readable summary warns about it
    assert nnp("ingest", tmp_path / "b.xyz", "--level", "pbe") == 0
    out = capsys.readouterr()
    assert "2 labels differ" in out.err and "structures" in out.out


def _energies(reg):
    from sqlalchemy import select

    from registry.store.schema import Label

    with reg.session() as s:
        return s.execute(select(Label.structure_id, Label.energy)).all()


def test_structures_only_and_one_run_for_many_files(registry, nnp, capsys, tmp_path):
    frames = labelled_molecules()
    ase.io.write(tmp_path / "a.xyz", frames[:3], format="extxyz")
    ase.io.write(tmp_path / "b.traj", frames[2:])
    s = run_json(nnp, capsys, "ingest", tmp_path / "a.xyz", tmp_path / "b.traj",
                 "--source", "unit-test")
    assert (s["structures_new"], s["labels_new"], s["duplicates_in_input"]) == (5, 0, 1)
    assert counts(registry) == (5, 0)
    run = registry.get_run(s["run_id"])
    assert run["kind"] == "ingest" and run["status"] == "ok"
    assert run["params"]["source"] == "unit-test"
    files = [e for e in run["inputs"] if e["entity_type"] == "file"]
    assert [e["ref"] for e in files] == [str(tmp_path / "a.xyz"), str(tmp_path / "b.traj")]
    for e in files:
        data = open(e["ref"], "rb").read()
        assert e["sha256"] == hashlib.sha256(data).hexdigest()
        assert e["meta"]["size"] == len(data)
    assert run["result"]["structures_new"] == 5


def test_units_conversion_is_recorded(registry, nnp, capsys, tmp_path):
    from ase.units import Hartree

    frames = labelled_molecules()[:1]
    e = frames[0].info["energy"]
    ase.io.write(tmp_path / "a.xyz", frames, format="extxyz")
    run_json(nnp, capsys, "ingest", tmp_path / "a.xyz", "--level", "hf/sto-3g", "--units",
             "hartree")
    batch = next(registry.iter_frames())
    assert batch.labels["hf/sto-3g"].energy[0] == e * Hartree
    from sqlalchemy import select

    from registry.store.schema import Label

    with registry.session() as s:
        assert s.scalar(select(Label.source_unit)) == "hartree"


def test_stats(registry, nnp, capsys, tmp_path):
    f = tmp_path / "multi.xyz"
    two_level_file(f)
    run_json(nnp, capsys, "ingest", f, "--level", "wb97x/6-31g*", "--energy-key",
             "energy_wb97x")
    st = run_json(nnp, capsys, "stats")
    assert st["structures"] == 6
    assert st["labels"]["wb97x/6-31g*"]["ok"] == 6
    assert set(st["elements"]) == {"H", "C", "N", "O", "Cu"}
    assert st["dialect"] == registry.dialect and st["size_bytes"] > 0
    assert "***" in st["database"] or "@" not in st["database"]
    assert nnp("stats") == 0
    out = capsys.readouterr().out
    assert "structures: 6" in out and "wb97x/6-31g*" in out
