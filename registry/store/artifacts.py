"""Content-addressed artifact store: objects named by their sha256 under ``NNP_ARTIFACTS``.

Layout: ``<root>/sha256/<first two hex>/<sha256>``. Writes go to a temporary name and are then
linked/renamed into place, so a reader never sees a half-written object; an existing object is
never overwritten. Every read recomputes the sha256 and refuses a mismatch. A local directory
is handled with ``os`` directly (fast, and ``os.link`` makes "never overwrite" atomic); any other
URL (``memory://``, ``s3://``...) goes through fsspec. Orphaned objects (written, then the
database transaction failed) are harmless: they are only found by their hash.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from .. import config
from ..errors import NotFound, RegistryError

_CHUNK = 1 << 20


class ArtifactError(RegistryError):
    """A problem with the artifact store."""


class ArtifactMissing(ArtifactError, NotFound):
    """An object the database refers to is not in the store."""


class ArtifactCorrupt(ArtifactError):
    """An object's bytes do not hash to its name (tampered or truncated)."""


class ArtifactStoreNotWritable(ArtifactError):
    """The store cannot be written (permissions, read-only file system...)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> tuple[str, int]:
    """(sha256, size) of a local file, read in chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _check_sha(sha: str) -> str:
    if not (isinstance(sha, str) and len(sha) == 64
            and all(c in "0123456789abcdef" for c in sha)):
        raise ArtifactError(f"invalid sha256 {sha!r}")
    return sha


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _filesystem(url: str, where: str):
    """fsspec's (filesystem, root path) for ``url``; an unknown protocol, a missing driver
    package or a malformed URL becomes :class:`ArtifactError` naming ``where`` (the
    variable or argument it came from)."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # a known protocol whose package (s3fs, gcsfs...) is missing
        raise ArtifactError(f"{where}: protocol {protocol!r} needs a package that is not "
                            f"installed ({exc})") from None
    except (ValueError, TypeError, OSError) as exc:
        unknown = protocol not in fsspec.available_protocols()
        why = "unknown protocol (use a folder, file://, memory://, s3://...)" if unknown else exc
        raise ArtifactError(f"{where}: cannot use protocol {protocol!r}: {why}") from None


class ArtifactStore:
    """The store at ``url`` (default ``NNP_ARTIFACTS``); ``put`` returns (sha256, size, uri)."""

    def __init__(self, url: str | None = None):
        self.url = url or config.artifacts_url()
        self.local = _is_local(self.url)
        if self.local:
            self.root = Path(self.url.removeprefix("file://")).expanduser().absolute()
            self.fs = None
        else:
            where = (f"NNP_ARTIFACTS={self.url!r}" if url is None
                     else f"artifact store URL {self.url!r}")
            self.fs, self.root = _filesystem(self.url, where)
            self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- naming -------------------------------------------------------------------------------
    def key(self, sha: str) -> str:
        """Object key relative to the root."""
        return f"sha256/{sha[:2]}/{sha}"

    def uri(self, sha: str) -> str:
        """Full location of the object (recorded in the database, informative)."""
        if self.local:
            return (self.root / self.key(sha)).as_uri()
        return self.fs.unstrip_protocol(f"{self.root}/{self.key(sha)}")

    def _path(self, sha: str):
        return self.root / self.key(sha) if self.local else f"{self.root}/{self.key(sha)}"

    def exists(self, sha: str) -> bool:
        _check_sha(sha)
        return self._path(sha).exists() if self.local else self.fs.exists(self._path(sha))

    # -- writing ------------------------------------------------------------------------------
    def put(self, data: bytes) -> tuple[str, int, str]:
        """Store ``data``; an existing object with that hash is verified and kept as is."""
        sha = sha256_bytes(data)
        if self.exists(sha):
            self.get(sha)  # refuses a corrupt existing object rather than pointing at it
            return sha, len(data), self.uri(sha)
        try:
            if self.local:
                self._put_local(sha, data)
            else:
                self._put_fsspec(sha, data)
        except OSError as exc:
            raise ArtifactStoreNotWritable(
                f"artifact store {self.url} is not writable: {exc.strerror or exc}") from None
        return sha, len(data), self.uri(sha)

    def put_file(self, path) -> tuple[str, int, str]:
        """Store the bytes of a local file."""
        return self.put(Path(path).read_bytes())

    def _put_local(self, sha: str, data: bytes) -> None:
        final = self.root / self.key(sha)
        tmpdir = self.root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"{sha}.{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, final)  # atomic, fails if the object already exists
            except FileExistsError:
                pass  # written concurrently by someone else: same content by construction
            except OSError:  # file system without hard links
                if not final.exists():
                    os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def _put_fsspec(self, sha: str, data: bytes) -> None:
        final = self._path(sha)
        tmp = f"{self.root}/tmp/{sha}.{uuid.uuid4().hex}.part"
        self.fs.makedirs(f"{self.root}/tmp", exist_ok=True)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        try:
            if not self.fs.exists(final):
                self.fs.mv(tmp, final)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)

    # -- reading ------------------------------------------------------------------------------
    def get(self, sha: str, uri: str | None = None) -> bytes:
        """The verified bytes of object ``sha`` (``uri``: a recorded fallback location)."""
        _check_sha(sha)
        data = self._read(sha, uri)
        got = sha256_bytes(data)
        if got != sha:
            raise ArtifactCorrupt(
                f"artifact {sha} in {self.url} is corrupt: its bytes hash to {got} "
                f"({len(data)} bytes); refusing to use it (restore it from a bundle or backup)")
        return data

    def _read(self, sha: str, uri: str | None) -> bytes:
        try:
            if self.local:
                with open(self.root / self.key(sha), "rb") as f:
                    return f.read()
            return self.fs.cat_file(self._path(sha))
        except (FileNotFoundError, NotADirectoryError):
            pass
        if uri and uri != self.uri(sha):  # stored under another NNP_ARTIFACTS
            try:
                import fsspec

                with fsspec.open(uri, "rb") as f:
                    return f.read()
            except (FileNotFoundError, OSError, ValueError):
                pass
        raise ArtifactMissing(f"artifact {sha} is missing from the artifact store {self.url}"
                              + (f" (recorded at {uri})" if uri else ""))

    def copy_to(self, sha: str, dest, uri: str | None = None) -> int:
        """Write the verified object to local path ``dest`` atomically; returns its size."""
        data = self.get(sha, uri)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return len(data)
