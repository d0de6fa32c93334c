"""File ingest in chunks (issue 18): the compiled extxyz parser reads what ASE reads, ASE reads
what it cannot vouch for, and a streamed ingest keeps the all-or-nothing rule and the counts
of an in-memory one across chunk boundaries (both backends)."""

from __future__ import annotations

from contextlib import nullcontext

import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from helpers import counts, crystal, labelled_molecules

from registry.chem.frames import concat
from registry.errors import BadInput
from registry.io.readers import ReadOptions, each_chunk, file_chunks, open_file, read_file


def read_both(path, opts, size=4):
    """(compiled parser, ASE) batches of ``path`` and the compiled parser's report."""
    out = []
    for fast in (True, False):
        report = open_file(path)
        out.append(concat(list(file_chunks(report, opts, size, fast=fast))))
        if fast:
            fast_report = report
    return out[0], out[1], fast_report


def assert_same(a, b):
    for name in ("numbers", "positions", "offsets", "cells", "pbc", "charge", "multiplicity"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape and np.array_equal(x, y), name
    assert (a.infos, a.frame_names, a.sources) == (b.infos, b.frame_names, b.sources)
    assert a.labels.keys() == b.labels.keys()
    for level, ca in a.labels.items():
        cb = b.labels[level]
        for name in ("present", "energy", "forces", "dipole", "charges", "stress"):
            x, y = getattr(ca, name), getattr(cb, name)
            assert (x is None) == (y is None), name
            assert x is None or np.array_equal(x, y, equal_nan=True), name
        assert ca.masks.keys() == cb.masks.keys()


def test_ase_property_names_match_ase():
    from ase.calculators.calculator import all_properties
    from ase.io.extxyz import per_config_properties

    from registry.io.extxyz_parser import ALL_PROPERTIES, PER_CONFIG_PROPERTIES

    assert ALL_PROPERTIES == set(all_properties)
    assert PER_CONFIG_PROPERTIES == set(per_config_properties)


def test_compiled_parser_reads_what_ase_reads(tmp_path):
    mols = labelled_molecules()
    mols[0].info.update(charge=-1, multiplicity=2, tag="hello", vec=np.arange(4), flag=True)
    mols[1].info["spin"] = 2
    mols[2].info["dipole"] = np.array([0.1, 0.2, 0.3])
    mols[2].arrays["charges"] = np.linspace(-0.5, 0.5, len(mols[2]))
    c1, c2 = crystal(), crystal(seed=1)
    c1.info["energy"], c1.arrays["forces"] = -3.0, np.ones((len(c1), 3))
    c2.calc = SinglePointCalculator(c2, energy=-1.0, forces=np.zeros((len(c2), 3)),
                                    stress=np.arange(6.0))
    ase.io.write(tmp_path / "a.extxyz", [c1, *mols, c2], format="extxyz")
    fast, slow, report = read_both(tmp_path / "a.extxyz", ReadOptions("pbe"))
    assert report.reader == "extxyz" and report.fallback is None
    assert_same(fast, slow)
    assert fast.labels["pbe"].masks.keys() == {"stress", "dipole", "charges"}
    # hand-written text: lower-case symbols, a Z column, Lattice without pbc, pbc without
    # Lattice, a per-atom "charge" column (ASE: the charges), numbers of every kind
    (tmp_path / "b.xyz").write_text(
        '2\nProperties=species:S:1:pos:R:3:charge:R:1 energy=-1.5 n=3 x=2.5 s=abc t=T\n'
        'h 0.0 0.0 0.0 0.25\nO 0.0 0.0 0.96 -0.25\n'
        '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=Z:I:1:pos:R:3 energy=2\n29 1 1 1\n'
        '1\npbc="T F T" energy=1e-3\nCL 0.5 0.5 0.5\n')
    fast, slow, report = read_both(tmp_path / "b.xyz", ReadOptions("x"), size=2)
    assert report.fallback is None
    assert_same(fast, slow)
    assert fast.numbers.tolist() == [1, 8, 29, 17]
    assert fast.pbc.tolist() == [[False] * 3, [True] * 3, [True, False, True]]


@pytest.mark.parametrize("text, why", [
    ("1\nenergy=1\nH 0x1 0 0\n", "hexadecimal"),
    ("1\nenergy=1 charge=4294967297\nH 0 0 0\n", "10 or more digits"),
    ("0\nenergy=1\n", "not a positive atom count"),  # crashes the C parser
    ("1\nenergy=1\nH 0 0 0\n2\nenergy=1\nH 0 0 0\n", "ends inside"),
    ("1\nenergy=1\nH 0 0 0\n1\n", "ends inside"),
    ("1 extra\nenergy=1\nH 0 0 0\n", "not a positive atom count"),
    ("1\nenergy=1\nH 0 0 0\n\n1\nenergy=1\nH 0 0 1\n", "frame 1"),
    ("1\nenergy=1\nH 0 0 0 7\n", "frame 0"),
])
def test_ase_reads_what_the_compiled_parser_cannot_vouch_for(tmp_path, text, why):
    path = tmp_path / "odd.xyz"
    path.write_text(text)
    report = open_file(path)
    got, ase_error = [], None
    try:
        each_chunk(report, ReadOptions("x"), 10, got.append, got.clear)
    except BadInput as exc:
        ase_error = str(exc)
    assert report.reader == "ase" and why in report.fallback
    slow = open_file(path)
    with pytest.raises(BadInput) if ase_error else nullcontext():
        expected = concat(list(file_chunks(slow, ReadOptions("x"), 10, fast=False)))
    if ase_error is None:
        assert_same(concat(got), expected)


def test_trailing_blank_lines_are_the_end(tmp_path):
    ase.io.write(tmp_path / "m.xyz", labelled_molecules(), format="extxyz")
    with open(tmp_path / "m.xyz", "a") as fh:
        fh.write("\n\n  \n")
    fast, slow, report = read_both(tmp_path / "m.xyz", ReadOptions("pbe"))
    assert report.fallback is None and len(fast) == 5
    assert_same(fast, slow)


def frames_with_duplicates():
    """9 frames of 6 structures: frame 6 repeats frame 1 (translated) with a label at level b,
    frame 7 repeats frame 0 (atoms reordered) with the same label at a, frame 8 repeats
    frame 2; frames 1 and 6 carry no label at a."""
    mols = labelled_molecules(("H2O", "CH4", "NH3", "C2H6", "CH3OH", "CH3CHO"), seed=5)
    for a in mols:
        a.info["energy_a"] = a.info.pop("energy")
        a.arrays["forces_a"] = a.arrays.pop("forces")
    mols[1].info.pop("energy_a")
    dup1 = mols[1].copy()
    dup1.translate([1.0, 2.0, 3.0])  # same structure: molecules hash without translation
    dup1.info["energy_b"] = 7.5
    dup0 = mols[0].copy()
    dup0 = dup0[[2, 0, 1]]  # same structure, atoms in another order
    dup0.info["energy_a"] = mols[0].info["energy_a"]
    dup0.arrays["forces_a"] = mols[0].arrays["forces_a"][[2, 0, 1]]
    return mols + [dup1, dup0, mols[2].copy()]


def test_duplicates_across_chunks_count_like_one_batch(registry, tmp_path):
    path = tmp_path / "dups.xyz"
    ase.io.write(path, frames_with_duplicates(), format="extxyz")
    s = registry.ingest_files([path], "a", energy_key="energy_a", skip_missing=True,
                              batch_size=2)
    assert (s.frames_read, s.frames_skipped, s.duplicates_in_input) == (7, 2, 2)
    assert (s.structures_new, s.structures_existing, s.labels_new) == (5, 0, 5)
    s = registry.ingest_files([path], "b", energy_key="energy_b", skip_missing=True,
                              batch_size=2)
    assert (s.frames_read, s.structures_new, s.labels_new) == (1, 1, 1)
    # without a level: every frame, the duplicates merged
    s = registry.ingest_files([path], batch_size=4)
    assert (s.frames_read, s.duplicates_in_input, s.structures_existing) == (9, 3, 6)
    assert counts(registry) == (6, 6)
    run = registry.get_run(s.run_id)
    (item,) = [i for i in run["inputs"] if i["entity_type"] == "file"]
    assert item["meta"]["reader"] == "extxyz" and item["meta"]["frames"] == 9


def test_the_first_frame_of_a_structure_is_stored(registry, tmp_path):
    """Frame 6 (chunk 2) is frame 1 (chunk 0) translated: the stored atoms are frame 1's, as
    an in-memory ingest keeps them."""
    path = tmp_path / "dups.xyz"
    ase.io.write(path, frames_with_duplicates(), format="extxyz")
    s = registry.ingest_files([path], batch_size=3)
    assert (s.structures_new, s.duplicates_in_input) == (6, 3)
    batch = next(registry.iter_frames())
    methane = int(np.flatnonzero(batch.n_atoms == 5)[0])
    stored = batch.positions[batch.offsets[methane]:batch.offsets[methane + 1]]
    first, again = ase.io.read(path, "1"), ase.io.read(path, "6")
    key = sorted(map(tuple, stored))
    assert key == sorted(map(tuple, first.positions))
    assert key != sorted(map(tuple, again.positions))


def test_conflict_across_chunks_writes_nothing(registry, nnp, capsys, tmp_path):
    frames = frames_with_duplicates()
    frames[7].info["energy_a"] += 1.0  # frame 0's structure again, another energy
    path = tmp_path / "conflict.xyz"
    ase.io.write(path, frames, format="extxyz")
    capsys.readouterr()
    assert nnp("ingest", path, "--level", "a", "--energy-key", "energy_a", "--skip-missing",
               "--batch-size", "2") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "conflicting a labels" in err and f"{path} frame 0" in err and \
        f"{path} frame 7" in err
    assert counts(registry) == (0, 0)
    assert registry.list_runs(kind="ingest") == []


def test_bad_frame_in_the_last_chunk_writes_nothing(registry, tmp_path):
    good = labelled_molecules()
    bad = labelled_molecules(("C6H6",), seed=9)
    bad[0].positions[3, 1] = np.nan
    ase.io.write(tmp_path / "a.xyz", good, format="extxyz")
    ase.io.write(tmp_path / "b.xyz", good[:2] + bad, format="extxyz")
    with pytest.raises(BadInput, match=rf"{tmp_path / 'b.xyz'} frame 2: positions"):
        registry.ingest_files([tmp_path / "a.xyz", tmp_path / "b.xyz"], "pbe", batch_size=2)
    assert counts(registry) == (0, 0)
    assert registry.list_runs() == []


def test_hdf5_in_chunks_equals_one_batch(registry, tmp_path):
    path = tmp_path / "ani.h5"
    rng = np.random.default_rng(2)
    with h5py.File(path, "w") as fh:
        for g, (symbols, c) in enumerate(((b"CHHHH", 7), (b"OHH", 5), (b"NHHH", 4))):
            grp = fh.create_group(f"mol{g}")
            grp["species"] = np.array([bytes([s]) for s in symbols])
            grp["coordinates"] = rng.normal(size=(c, len(symbols), 3))
            e = rng.normal(size=c)
            e[1] = np.nan  # no label for conformer 1 of each group
            grp["energies"] = e
            grp["forces"] = rng.normal(size=(c, len(symbols), 3))
    opts = ReadOptions("x", skip_missing=True)
    report = open_file(path)
    chunks = list(file_chunks(report, opts, 4))
    assert [len(b) for b in chunks] == [6, 4, 3] and report.skipped == 3
    (whole,), skipped = read_file(path, opts)
    assert skipped == 3
    assert_same(concat(chunks), whole)
    s = registry.ingest_files([path], "x", skip_missing=True, batch_size=4)
    assert (s.structures_new, s.labels_new, s.frames_skipped) == (13, 13, 3)
