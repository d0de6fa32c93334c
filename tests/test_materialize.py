"""Materialize: arrays equal to the stored rows, bucketing, and a verified local cache."""

from __future__ import annotations

import json

import numpy as np
from helpers import crystal, labelled_molecules

from registry.training_data.buckets import bucket_size

LEVEL = "pbe/def2-svp"


def _data(registry):
    mols = []
    for k in range(3):
        mols += labelled_molecules(("H2O", "CH4", "C2H6", "C6H6", "CH3CH2OH"), seed=k)
    cu = crystal()
    cu.info["energy"] = -15.0
    cu.arrays["forces"] = np.zeros((len(cu), 3))
    registry.ingest(mols + [cu], LEVEL)
    return mols + [cu]


def test_arrays_match_stored_frames(registry, tmp_path):
    frames = _data(registry)
    v = registry.create_dataset_version("m", levels=[LEVEL], split="0.6,0.2,0.2",
                                        group_by="none")
    m = registry.materialize("m", cache_dir=tmp_path)
    assert m.source == registry.dialect and m.cache_status == "miss"
    assert len(m) == len(frames) == v["n_structures"]
    assert sum(m.split_counts().values()) == len(frames)
    by_energy = {round(a.info["energy"], 9): a for a in frames}
    for b in m.buckets:
        size = b["numbers"].shape[1]
        assert (bucket_size(b["n_atoms"]) == size).all()
        for i in range(len(b["n_atoms"])):
            n = b["n_atoms"][i]
            a = by_energy[round(float(b["energy"][i]), 9)]
            assert sorted(b["numbers"][i, :n].tolist()) == sorted(a.numbers.tolist())
            assert (b["numbers"][i, n:] == 0).all() and (b["positions"][i, n:] == 0).all()
            # atoms are stored in canonical order: compare as sets of (Z, x, y, z, fx, fy, fz)
            got = np.column_stack([b["numbers"][i, :n], b["positions"][i, :n],
                                   b["forces"][i, :n]])
            want = np.column_stack([a.numbers, a.positions, a.arrays["forces"]])
            assert np.allclose(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])])
            assert b["pbc"][i].tolist() == a.pbc.tolist()
            assert np.allclose(b["cell"][i], a.cell.array if a.pbc.any() else 0)


def test_cache_hit_equal_and_corruption_rebuilt(registry, tmp_path):
    _data(registry)
    v = registry.create_dataset_version("c", levels=[LEVEL])
    first = registry.materialize("c", cache_dir=tmp_path)
    hit = registry.materialize("c:1", cache_dir=tmp_path)
    assert (hit.source, hit.cache_status) == ("cache", "hit")
    for a, b in zip(first.buckets, hit.buckets, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    data = tmp_path / v["hash"] / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip one byte, same size
    data.write_bytes(bytes(raw))
    again = registry.materialize("c", cache_dir=tmp_path)
    assert again.cache_status == "rebuilt: corrupted data (checksum mismatch)"
    assert registry.materialize("c", cache_dir=tmp_path).cache_status == "hit"
    data.write_bytes(bytes(raw[:100]))  # truncated
    assert registry.materialize("c", cache_dir=tmp_path).cache_status.startswith(
        "rebuilt: corrupted data (size")
    manifest = tmp_path / v["hash"] / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["format"] = 0
    manifest.write_text(json.dumps(meta))
    assert registry.materialize("c", cache_dir=tmp_path).cache_status == "rebuilt: stale format"
    manifest.write_text("{not json")
    assert registry.materialize("c", cache_dir=tmp_path).cache_status.startswith(
        "rebuilt: corrupted manifest")
    assert registry.materialize("c", cache_dir=tmp_path).cache_status == "hit"


def test_cache_dir_from_env_and_no_cache(registry, tmp_path, monkeypatch):
    _data(registry)
    registry.create_dataset_version("e", levels=[LEVEL])
    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "envcache"))
    assert registry.materialize("e", cache=False).cache_status == "off"
    assert not (tmp_path / "envcache").exists()
    registry.materialize("e")
    assert registry.materialize("e").cache_status == "hit"
    assert len(list((tmp_path / "envcache").iterdir())) == 1


def test_old_version_reproducible_after_retraction(registry, tmp_path):
    _data(registry)
    v1 = registry.create_dataset_version("r", levels=[LEVEL])
    before = registry.materialize("r:1", cache=False)
    registry.retract_labels(level=LEVEL, filter='elements HAS "O"', reason="wrong SCF")
    after = registry.materialize("r:1", cache=False)
    assert registry.resolve_dataset("r:1")["hash"] == v1["hash"]
    for a, b in zip(before.buckets, after.buckets, strict=True):
        np.testing.assert_array_equal(a["energy"], b["energy"])
    v2 = registry.create_dataset_version("r", levels=[LEVEL])
    assert v2["n_structures"] == v1["n_structures"] - 6  # 3 x (H2O, ethanol)
    assert v2["hash"] != v1["hash"]


def test_bucket_sizes():
    assert bucket_size(np.array([1, 5, 8, 9, 10, 11, 16, 17, 20, 21, 100])).tolist() == [
        1, 5, 8, 10, 10, 12, 16, 20, 20, 24, 112]


def test_chunked_read_equals_single_read(registry, monkeypatch):
    """Versions larger than one aggregate chunk are read in structure-id ranges."""
    import registry.training_data.reads as mat

    _data(registry)
    registry.create_dataset_version("k", levels=[LEVEL], group_by="none")
    whole = registry.materialize("k", cache=False)
    monkeypatch.setattr(mat, "_CHUNK_ROWS", {"sqlite": 4, "postgresql": 4})
    chunked = registry.materialize("k", cache=False)
    # ranges read in parallel threads, each on its own connection, on both backends
    monkeypatch.setattr(mat, "_READERS", {"sqlite": 3, "postgresql": 3})
    monkeypatch.setattr(mat, "_PARALLEL_MIN", 1)
    parallel = registry.materialize("k", cache=False)
    monkeypatch.setattr(mat, "_CHUNK_ROWS", {"sqlite": 1000, "postgresql": 1000})
    two_ranges = registry.materialize("k", cache=False)
    assert len(chunked) == len(whole) == len(parallel) == len(two_ranges) == 16
    for got in (chunked, parallel, two_ranges):
        for a, b in zip(whole.buckets, got.buckets, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])


def test_two_pass_read_equals_general_read(registry, monkeypatch):
    """SQLite's two-pass read into the buckets gives what the general read + bucketize give
    (PostgreSQL takes the general path: the test runs both there), including structures
    without forces (NaN rows, padding 0) and a crystal, in one range and in many ranges."""
    import registry.training_data.reads as mat

    _data(registry)
    bare = labelled_molecules(("C6H6", "NH3", "CH3OH"), seed=7)
    for a in bare:
        del a.arrays["forces"]
    registry.ingest(bare, LEVEL)
    info = registry.create_dataset_version("f", levels=[LEVEL], group_by="none")
    lid = registry.ensure_level(LEVEL)["id"]
    args = (registry.engine.connect, registry.dialect, info["id"], [lid], False,
            info["n_structures"])
    for chunk in (1000, 3):
        monkeypatch.setattr(mat, "_CHUNK_ROWS", {"sqlite": chunk, "postgresql": chunk})
        monkeypatch.setattr(mat, "_PARALLEL_MIN", 1)
        general = mat.bucketize(mat.read_version(*args))
        got = mat.read_buckets(*args)
        assert len(got) == len(general) and sum(len(b["energy"]) for b in got) == 19
        for a, b in zip(general, got, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
        forces = np.concatenate([b["forces"][b["numbers"] > 0] for b in got])
        assert np.isnan(forces).all(axis=1).sum() == 12 + 4 + 6  # the bare molecules' atoms
        assert all((b["forces"][b["numbers"] == 0] == 0).all() for b in got)


def test_range_cuts_dense_and_sparse(registry, monkeypatch):
    """Range cuts: equal slices of the id span for dense versions, exact cuts from the member
    list for sparse ones; either way, and with empty ranges, the read equals one range."""
    from sqlalchemy import select

    import registry.training_data.reads as mat
    from registry.store.schema import DatasetMember

    _data(registry)
    registry.create_dataset_version("s", levels=[LEVEL], filter="nsites>=6", group_by="none")
    whole = registry.materialize("s", cache=False)
    vid, n = (registry.resolve_dataset("s")[k] for k in ("id", "n_structures"))
    with registry.engine.connect() as conn:
        sids = sorted(conn.scalars(select(DatasetMember.structure_id)
                                   .where(DatasetMember.version_id == vid)))
    span = sids[-1] - sids[0] + 1
    assert span > n  # the filter leaves gaps in the ids
    monkeypatch.setattr(mat, "_CHUNK_ROWS", {"sqlite": 2, "postgresql": 2})
    monkeypatch.setattr(mat, "_PARALLEL_MIN", 1)

    def same_as_whole():
        got = registry.materialize("s", cache=False)
        for a, b in zip(whole.buckets, got.buckets, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])

    for dense in (0, span / n):  # exact cuts; equal slices of the span
        monkeypatch.setattr(mat, "_DENSE", dense)
        ranges = mat._ranges(registry.engine.connect, registry.dialect, vid, n)
        sizes = [sum(lo <= s <= hi for s in sids) for lo, hi in ranges]
        assert sum(sizes) == n and len(ranges) == -(-n // 2)
        if dense:
            step = -(-span // len(ranges))
            assert all(hi - lo + 1 == step for lo, hi in ranges[1:-1])
        else:
            assert max(sizes) == 2
        same_as_whole()
    cuts = mat._Reader.cuts  # ranges holding no member read as empty
    monkeypatch.setattr(mat._Reader, "cuts", lambda self, pieces, n_structures: [
        sids[0] - 10, sids[0] - 5, *cuts(self, pieces, n_structures)])
    same_as_whole()


def test_oversized_ranges_are_read_in_halves(registry, monkeypatch):
    """A range whose aggregate would exceed the database's size limit is read in halves, by
    the general read and by SQLite's two-pass read alike."""
    import registry.training_data.reads as mat

    _data(registry)
    info = registry.create_dataset_version("h", levels=[LEVEL], group_by="none")
    whole = registry.materialize("h", cache=False)
    one = mat._Reader._one
    halved = []

    def limited(self, sql, params):
        lo, hi = params[-2:]
        if "group_concat" in sql or "string_agg" in sql:
            if "structure_id BETWEEN" in sql and hi - lo > 2:
                halved.append((lo, hi))
                raise RuntimeError("string or blob too big")
        return one(self, sql, params)

    monkeypatch.setattr(mat._Reader, "_one", limited)
    # open-ended ranges over the test's few ids, so halving them down to 3 ids ends soon
    monkeypatch.setattr(mat, "_ID_MIN", 0)
    monkeypatch.setattr(mat, "_ID_MAX", 63)
    with registry.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT max(id) FROM structures").scalar() <= 63
    args = (registry.engine.connect, registry.dialect, info["id"],
            [registry.ensure_level(LEVEL)["id"]], False, info["n_structures"])
    for got in (registry.materialize("h", cache=False).buckets,
                mat.bucketize(mat.read_version(*args))):
        for a, b in zip(whole.buckets, got, strict=True):
            for k in b:
                np.testing.assert_array_equal(a[k], b[k])
    assert halved


def test_hash_prefix_ties_fall_back_to_full_hashes(registry, monkeypatch):
    """Equal 64-bit hash prefixes are ordered by the full hashes (read in ranges)."""
    import registry.training_data.reads as mat

    _data(registry)
    registry.create_dataset_version("t", levels=[LEVEL], group_by="none")
    whole = registry.materialize("t", cache=False)
    parse = mat._Reader._parse

    def tied_keys(self, row, structures, meta=False):
        out = parse(self, row, structures, meta)
        if "key" in out:
            out["key"] = np.zeros_like(out["key"])
        return out

    monkeypatch.setattr(mat._Reader, "_parse", tied_keys)
    monkeypatch.setattr(mat, "_READERS", {"sqlite": 2, "postgresql": 2})
    monkeypatch.setattr(mat, "_PARALLEL_MIN", 1)
    tied = registry.materialize("t", cache=False)
    info = registry.resolve_dataset("t")  # and the general read (SQLite: multi-level versions)
    general = mat.bucketize(mat.read_version(
        registry.engine.connect, registry.dialect, info["id"],
        [registry.ensure_level(LEVEL)["id"]], False, info["n_structures"]))
    for got in (tied.buckets, general):  # (bucketize's buckets lack energy_ref)
        for a, b in zip(whole.buckets, got, strict=True):
            for k in b:
                np.testing.assert_array_equal(a[k], b[k])


def test_reader_settings_do_not_leak(registry, monkeypatch):
    """The readers' per-read settings (SQLite: a small page cache; PostgreSQL: no parallel
    query, more work_mem) hold only while a version is read: every pooled connection has its
    usual settings back."""
    import registry.training_data.reads as mat
    from registry.store.engine import SQLITE_CACHE

    sqlite = registry.dialect == "sqlite"
    show = "PRAGMA cache_size" if sqlite else "SHOW work_mem"
    _data(registry)
    registry.create_dataset_version("p", levels=[LEVEL], group_by="none")
    raw = registry.engine.raw_connection()
    try:
        usual = SQLITE_CACHE if sqlite else raw.cursor().execute(show).fetchone()[0]
    finally:
        raw.close()
    monkeypatch.setattr(mat, "_CHUNK_ROWS", {"sqlite": 3, "postgresql": 3})
    monkeypatch.setattr(mat, "_PARALLEL_MIN", 1)
    seen = []
    query = mat._Reader._query

    def spy(self, sql, params):
        seen.append(self.raw.cursor().execute(show).fetchone()[0])
        if not self.pg:
            self.raw.commit()
        else:
            self.raw.rollback()
        return query(self, sql, params)

    monkeypatch.setattr(mat._Reader, "_query", spy)
    assert len(registry.materialize("p", cache=False)) == 16
    assert seen and set(seen) == {usual}  # before each read: the usual setting
    raws = [registry.engine.raw_connection() for _ in range(4)]  # no transaction opened
    try:
        assert {r.cursor().execute(show).fetchone()[0] for r in raws} == {usual}
    finally:
        for r in raws:
            r.close()
