"""Pass 1 of an HDF5 file in several processes (issue 18): the same rows, counts, errors and
all-or-nothing rule as one process (both backends)."""

from __future__ import annotations

import json
import multiprocessing as mp

import h5py
import numpy as np
import pytest
from helpers import counts

from registry.errors import BadInput
from registry.ingest import pass1
from registry.io.readers import ReadOptions

SYMBOLS = (b"CHHHH", b"OHH", b"NHHH", b"CCO", b"HH", b"CNHHHH", b"OO")


def write_h5(path, *, nan_group=None, bad=(), seed=0):
    """Seven molecule groups of 3-6 conformers; ``nan_group``: a group with no energies
    (all skipped with --skip-missing); ``bad``: (group, problem) pairs."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fh:
        for g, symbols in enumerate(SYMBOLS):
            c = 3 + g % 4
            grp = fh.create_group(f"mol{g}")
            species = [bytes([s]) for s in symbols]
            coords = rng.normal(size=(c, len(symbols), 3)) * 1.5
            energies = rng.normal(size=c)
            forces = rng.normal(size=(c, len(symbols), 3))
            if g == nan_group:
                energies[:] = np.nan
            problems = {what for where, what in bad if where == g}
            if "nan-position" in problems:
                coords[1, 0, 0] = np.nan
            if "element" in problems:
                species[0] = b"Xx"
            grp["species"] = np.array(species)
            grp["coordinates"] = coords
            grp["energies"] = energies
            grp["forces"] = forces[:, :1] if "shape" in problems else forces
    return path


def ingest(reg, path, monkeypatch, readers, **kw):
    monkeypatch.setenv(pass1.ENV, str(readers))
    return reg.ingest_files([path], "wb97x", batch_size=kw.pop("batch_size", 5), **kw)


def pass_one(path, monkeypatch, readers, size, **kw):
    """Everything pass 2 uses of pass 1: per chunk the spilled arrays, frame names and
    hashes, and the kept hashes, levels and compositions; the file's run input."""
    monkeypatch.setenv(pass1.ENV, str(readers))
    paths = path if isinstance(path, list) else [path]
    read = pass1.read_files(paths, ReadOptions("wB97X", **kw), batch_size=size)
    try:
        chunks = []
        for k in range(read.spill.count):
            batch, hexes, order = read.spill.get(k)
            arrays = {f: np.asarray(getattr(batch, f)) for f in (
                "numbers", "positions", "offsets", "cells", "pbc", "charge", "multiplicity")}
            labels = {lv: {f: getattr(c, f) for f in ("present", "energy", "forces")}
                      for lv, c in batch.labels.items()}
            chunks.append((arrays, labels, batch.sources, read.spill.names(k), hexes, order))
        kept = (read.p1.hashes, read.p1.present, read.p1.comps)
        items = read.inputs
    finally:
        read.close()
    return chunks, kept, items


def assert_equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_equal(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    else:
        assert a == b


@pytest.mark.parametrize("readers", [2, 3])
@pytest.mark.parametrize("size", [4, 9, 1000])
def test_processes_read_what_one_process_reads(monkeypatch, tmp_path, readers, size):
    path = write_h5(tmp_path / "ani.h5", nan_group=2)
    one = pass_one(path, monkeypatch, 1, size, skip_missing=True)
    many = pass_one(path, monkeypatch, readers, size, skip_missing=True)
    assert one[2][0]["frames_skipped"] == 5 and many[2][0]["reader"] == "h5py"
    assert len(one[0]) == {4: 4, 9: 3, 1000: 1}[size]  # at 4: one chunk all skipped
    assert_equal(many, one)
    assert not mp.active_children()


def test_processes_read_a_file_after_others(monkeypatch, tmp_path):
    first = write_h5(tmp_path / "first.h5", seed=1)
    second = write_h5(tmp_path / "second.h5", nan_group=2, seed=2)
    one = pass_one([first, second], monkeypatch, 1, 4, skip_missing=True)
    many = pass_one([first, second], monkeypatch, 2, 4, skip_missing=True)
    assert len(one[0]) == 9 and [i["frames"] for i in one[2]] == [30, 25]
    assert_equal(many, one)


def test_processes_count_skips_and_duplicates_across_chunks(registry, monkeypatch, tmp_path):
    path = write_h5(tmp_path / "ani.h5", nan_group=2)
    with h5py.File(path, "a") as fh:  # mol7 repeats mol1 (OHH) whole: chunks apart
        fh.copy("mol1", "mol7")
    s = ingest(registry, path, monkeypatch, 2, skip_missing=True, batch_size=4)
    n = sum(3 + g % 4 for g in range(7))
    assert s.frames_skipped == 5 and s.frames_read == n - 5 + 4
    assert s.duplicates_in_input == 4
    assert (s.structures_new, s.labels_new) == (n - 5, n - 5)
    assert counts(registry) == (n - 5, n - 5)
    (run,) = registry.list_runs(kind="ingest")
    (item,) = [i for i in registry.get_run(run["id"])["inputs"] if i["entity_type"] == "file"]
    meta = item["meta"]
    assert (meta["frames"], meta["frames_skipped"], meta["reader"]) == (n - 5 + 4, 5, "h5py")


@pytest.mark.parametrize("bad", [
    # in chunks of 5 conformers: groups 0-1 | 2 | 3 | 4-5 | 6, read by processes 0 1 0 1 0
    [(3, "nan-position"), (2, "shape")],  # process 1's error comes first in the file
    [(1, "element"), (5, "nan-position")],
    [(6, "shape")],
])
def test_processes_raise_the_first_error_in_file_order_and_write_nothing(
        registry, monkeypatch, tmp_path, bad):
    path = write_h5(tmp_path / "ani.h5", bad=bad)
    with pytest.raises(BadInput) as one:
        ingest(registry, path, monkeypatch, 1)
    with pytest.raises(BadInput) as many:
        ingest(registry, path, monkeypatch, 2)
    assert str(many.value) == str(one.value)
    assert counts(registry) == (0, 0) and registry.list_runs() == []
    assert not mp.active_children()


def test_processes_refuse_a_file_with_no_frames(registry, monkeypatch, tmp_path):
    path = tmp_path / "ani.h5"
    with h5py.File(path, "w") as fh:
        for g in range(3):
            grp = fh.create_group(f"m{g}")
            grp["species"] = np.array([b"H", b"H"])
            grp["coordinates"] = np.zeros((2, 2, 3)) + [[0, 0, 0], [0, 0, 0.74]]
            grp["energies"] = np.full(2, np.nan)
    with pytest.raises(BadInput, match=r"no frames to ingest \(6 skipped\)"):
        ingest(registry, path, monkeypatch, 2, skip_missing=True, batch_size=2)
    assert counts(registry) == (0, 0)


def test_reader_count_is_checked(registry, monkeypatch, tmp_path):
    path = write_h5(tmp_path / "ani.h5")
    with pytest.raises(BadInput, match="NNP_INGEST_READERS='two'"):
        ingest(registry, path, monkeypatch, "two")
    assert counts(registry) == (0, 0)


def test_small_files_and_other_formats_are_read_in_process(tmp_path, monkeypatch):
    monkeypatch.delenv(pass1.ENV, raising=False)
    path = write_h5(tmp_path / "ani.h5")
    report = pass1.open_file(path)
    assert pass1.reader_processes(report) == 1  # under MIN_BYTES
    monkeypatch.setattr(pass1, "MIN_BYTES", 1)
    assert pass1.reader_processes(report) == min(len(__import__("os").sched_getaffinity(0)),
                                                  pass1.MAX_PROCESSES)
    xyz = tmp_path / "a.xyz"
    xyz.write_text("1\n\nH 0 0 0\n")
    monkeypatch.setenv(pass1.ENV, "4")
    assert pass1.reader_processes(pass1.open_file(xyz)) == 1


def test_cli_opens_a_new_database_while_processes_read(empty_db_url, nnp, capsys,
                                                        monkeypatch, tmp_path):
    path = write_h5(tmp_path / "ani.h5")
    monkeypatch.setenv("NNP_DATABASE_URL", empty_db_url)
    monkeypatch.setenv("NNP_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv(pass1.ENV, "2")
    code = nnp("ingest", str(path), "--level", "wb97x", "--batch-size", "5", "--json")
    out, err = capsys.readouterr()
    assert code == 0, err
    n = sum(3 + g % 4 for g in range(7))
    assert json.loads(out)["structures_new"] == n
    assert "created the registry schema" in err
    assert not mp.active_children()


def _die(conn, *args):
    import os

    os._exit(3)


def test_a_dead_reader_is_named_and_nothing_is_written(registry, monkeypatch, tmp_path):
    path = write_h5(tmp_path / "ani.h5")
    monkeypatch.setattr(pass1, "_share", _die)  # the forked children run the patched code
    with pytest.raises(RuntimeError, match="a reader process exited with status 3"):
        ingest(registry, path, monkeypatch, 2)
    assert counts(registry) == (0, 0) and registry.list_runs() == []
    assert not mp.active_children()


def _full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_reader_error_is_named_and_nothing_is_written(registry, monkeypatch, tmp_path):
    path = write_h5(tmp_path / "ani.h5")
    monkeypatch.setattr(pass1.Spill, "put", _full_disk)  # as the forked children see it
    with pytest.raises(RuntimeError, match=r"a reader process failed: OSError: \[Errno 28\] "
                                           r"No space left on device; nothing was written"):
        ingest(registry, path, monkeypatch, 2)
    assert counts(registry) == (0, 0) and registry.list_runs() == []
    assert not mp.active_children()


def test_a_spilled_chunk_of_several_sources_comes_back_whole(tmp_path):
    from registry.chem.frames import FrameBatch
    from registry.ingest.spill import Spill

    batch = FrameBatch(numbers=np.array([1, 1, 8]), positions=np.arange(9.0).reshape(3, 3),
                       offsets=np.array([0, 2, 3]), cells=np.zeros((2, 3, 3)),
                       pbc=np.zeros((2, 3), dtype=bool), charge=np.zeros(2, dtype=np.int64),
                       multiplicity=np.ones(2, dtype=np.int64), sources=["b.xyz", "a.xyz"],
                       frame_names=["b.xyz frame 0", "a.xyz frame 0"])
    spill = Spill()
    try:
        spill.put(batch, np.array([b"1" * 64, b"2" * 64]), np.array([0, 1, 2]))
        assert spill.count == 1
        back, hexes, order = spill.get(0)
        assert back.sources == ["b.xyz", "a.xyz"] and hexes.tolist() == [b"1" * 64, b"2" * 64]
        assert np.array_equal(back.positions, batch.positions)
        assert spill.names(0) == ["b.xyz frame 0", "a.xyz frame 0"]
    finally:
        spill.close()
