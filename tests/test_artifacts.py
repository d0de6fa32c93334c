"""The content-addressed artifact store: atomic writes, never overwrite, verify on read."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import numpy as np
import pytest

from registry.store.artifacts import (
    ArtifactCorrupt,
    ArtifactMissing,
    ArtifactStore,
    ArtifactStoreNotWritable,
)


def _tamper(path):
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(3)
        f.write(b"X")


def test_put_get_layout_and_never_overwrite(tmp_path):
    store = ArtifactStore(str(tmp_path / "a"))
    data = os.urandom(5000)
    sha, size, uri = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest() and size == 5000
    path = tmp_path / "a" / "sha256" / sha[:2] / sha
    assert path.read_bytes() == data and uri == path.as_uri()
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # objects are made read-only
    assert oct(path.stat().st_mode & 0o777) == oct(0o444)
    inode, mtime = path.stat().st_ino, path.stat().st_mtime_ns
    assert store.put(data) == (sha, size, uri)  # second put keeps the existing object
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (inode, mtime)
    assert store.get(sha) == data and store.exists(sha)
    assert list((tmp_path / "a" / "tmp").iterdir()) == []  # no temporary files left


def test_read_refuses_tampered_object(tmp_path):
    store = ArtifactStore(str(tmp_path))
    sha, _, _ = store.put(b"weights" * 100)
    _tamper(tmp_path / "sha256" / sha[:2] / sha)
    with pytest.raises(ArtifactCorrupt, match=f"artifact {sha} .* is corrupt"):
        store.get(sha)
    with pytest.raises(ArtifactCorrupt):  # a put of the same content refuses to point at it
        store.put(b"weights" * 100)
    dest = tmp_path / "out.bin"
    with pytest.raises(ArtifactCorrupt):
        store.copy_to(sha, dest)
    assert not dest.exists()


def test_missing_object_and_bad_hash(tmp_path):
    store = ArtifactStore(str(tmp_path))
    sha = hashlib.sha256(b"nothing").hexdigest()
    with pytest.raises(ArtifactMissing, match="missing from the artifact store"):
        store.get(sha)
    with pytest.raises(Exception, match="invalid sha256"):
        store.get("../../etc/passwd")


def test_not_writable_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder should be")
    store = ArtifactStore(str(blocker / "artifacts"))
    with pytest.raises(ArtifactStoreNotWritable, match="is not writable"):
        store.put(b"abc")


def test_fallback_to_recorded_uri(tmp_path):
    old = ArtifactStore(str(tmp_path / "old"))
    sha, _, uri = old.put(b"moved store")
    new = ArtifactStore(str(tmp_path / "new"))
    assert new.get(sha, uri) == b"moved store"
    with pytest.raises(ArtifactMissing):
        new.get(sha)


def test_concurrent_puts_of_same_content(tmp_path):
    store = ArtifactStore(str(tmp_path))
    data = os.urandom(1 << 16)
    errors = []

    def put():
        try:
            store.put(data)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get(hashlib.sha256(data).hexdigest()) == data


def test_fsspec_memory_store():
    store = ArtifactStore(f"memory://nnp-test-{uuid.uuid4().hex}")
    sha, size, uri = store.put(b"in memory")
    assert uri.startswith("memory://") and store.get(sha) == b"in memory"
    store.put(b"in memory")
    store.fs.pipe_file(store._path(sha), b"in memorY")  # tamper
    with pytest.raises(ArtifactCorrupt):
        store.get(sha)


def test_registry_refuses_unwritable_store_and_writes_nothing(registry, tmp_path):
    from test_models import row_counts

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    from registry.store.artifacts import ArtifactStore as Store

    registry.artifacts = Store(str(blocker / "store"))
    before = row_counts(registry)
    with pytest.raises(ArtifactStoreNotWritable, match="is not writable"):
        registry.register_model("m", {"w": np.ones(3)}, architecture="mlp")
    assert row_counts(registry) == before


def test_pull_refuses_tampered_and_missing_artifacts(registry, tmp_path):
    info = registry.register_model("m", {"w": np.arange(10.0)}, architecture="mlp")
    sha = info["files"][0]["sha256"]
    path = registry.artifacts.root / registry.artifacts.key(sha)
    _tamper(path)
    dest = tmp_path / "pulled"
    with pytest.raises(ArtifactCorrupt, match="corrupt"):
        registry.pull_model("m:1", dest=dest)
    assert not dest.exists()  # nothing written
    os.chmod(path, 0o644)
    path.unlink()
    with pytest.raises(ArtifactMissing, match="missing"):
        registry.pull_model("m")
