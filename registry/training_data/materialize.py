"""Materialize a dataset version into training arrays, bucketed by size, with a local cache.

Each bucket holds the structures whose atom count pads to the same size (exact up to 8 atoms,
then steps of a quarter power of two, so padding wastes at most 25 %), in structure-hash order
(the same on every backend). Arrays per bucket, padded atoms having number 0:

| name          | dtype | shape         | meaning                                            |
|---------------|-------|---------------|----------------------------------------------------|
| structure_id  | int64 | (B,)          | row id in this database                            |
| n_atoms       | int32 | (B,)          |                                                    |
| numbers       | uint8 | (B, n)        | atomic numbers, 0 = padding                        |
| positions     | f8    | (B, n, 3)     | Å                                                  |
| cell          | f8    | (B, 3, 3)     | Å, zeros without a cell                            |
| pbc           | bool  | (B, 3)        |                                                    |
| split         | int8  | (B,)          | 0 train, 1 valid, 2 test                           |
| energy        | f8    | (B,)          | target, eV (HIGH − LOW for a delta version)        |
| forces        | f8    | (B, n, 3)     | target, eV/Å (NaN where absent)                    |
| level_energy  | f8    | (B, L)        | per level, in ``levels`` order (only when L > 1)   |
| energy_ref    | f8    | (B,)          | sum of atomic reference energies of the target     |

``energy_ref`` is computed on load from the level's current reference energies (so it is never
stale); everything else is cached under ``NNP_CACHE`` (default ``./.nnp/cache``) in
``<version hash>/``: one ``data.bin`` (arrays, 64-byte aligned) and ``manifest.json`` (dtype,
shape, offset of each array; size and XXH3-128 checksum of the data). A cache whose manifest,
size, format or checksum does not match is rebuilt. The checksum is a fast non-cryptographic
integrity check of a local file (it catches flipped bytes and truncation); the version's
identity stays its sha256 content hash in the database. numpy only; nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash
from sqlalchemy import select

from .. import config
from ..chem.elements import SYMBOLS
from ..curation.datasets import resolve_dataset
from ..errors import BadInput
from ..store.schema import LevelOfTheory, ReferenceEnergy
from .reads import read_buckets

CACHE_FORMAT = 2
_ALIGN = 64


def cache_root() -> Path:
    """``NNP_CACHE`` or ``./.nnp/cache``."""
    return config.cache_dir()


def _check_cache_root(root: Path, where: str) -> None:
    """Refuse a cache root that exists but is not a folder (before any work is done)."""
    try:
        if root.exists() and not root.is_dir():
            raise BadInput(f"{where}={str(root)!r} is not a folder (it is a file); point it at "
                           f"a folder for the materialize cache")
    except OSError as exc:
        raise BadInput(f"{where}={str(root)!r} cannot be used: {exc.strerror or exc}") from None


@dataclass
class Materialized:
    """Arrays of a dataset version; ``buckets`` is a list of dicts of numpy arrays."""

    ref: str
    hash: str
    levels: list[str]
    target: str
    buckets: list[dict[str, np.ndarray]]
    source: str  # "sqlite", "postgresql" or "cache"
    cache_status: str = "off"  # off / hit / miss / rebuilt: <why>
    seconds: float = 0.0
    missing_reference_elements: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(b["structure_id"]) for b in self.buckets)

    def split_counts(self) -> dict[str, int]:
        s = np.concatenate([b["split"] for b in self.buckets]) if self.buckets else np.zeros(0)
        return {n: int((s == k).sum()) for k, n in enumerate(("train", "valid", "test"))}

    def summary(self) -> dict:
        return {"ref": self.ref, "hash": self.hash, "levels": self.levels,
                "target": self.target, "n_structures": len(self), "source": self.source,
                "cache": self.cache_status, "seconds": round(self.seconds, 4),
                "split_counts": self.split_counts(),
                "buckets": [{"size": int(b["numbers"].shape[1]),
                             "n_structures": int(len(b["structure_id"]))} for b in self.buckets],
                "missing_reference_elements": self.missing_reference_elements}


# ------------------------------------------------------------------------ cache
def _cache_dir(root: Path, version_hash: str) -> Path:
    return root / version_hash


def write_cache(root: Path, meta: dict, buckets: list[dict]) -> None:
    """Write ``data.bin`` then ``manifest.json`` (each via a temporary file + rename)."""
    d = _cache_dir(root, meta["hash"])
    if d.exists() and not d.is_dir():
        d.unlink()  # a damaged entry: the cache is ours to rebuild
    d.mkdir(parents=True, exist_ok=True)
    for name in ("data.bin", "manifest.json"):  # a folder in a file's place: damaged entry
        if (d / name).is_dir() and not (d / name).is_symlink():
            shutil.rmtree(d / name)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    arrays, offset, h = [], 0, xxhash.xxh3_128()
    with open(d / ("data.bin" + tag), "wb") as f:
        for i, b in enumerate(buckets):
            for name, arr in b.items():
                arr = np.ascontiguousarray(arr)
                pad = (-offset) % _ALIGN
                if pad:
                    f.write(bytes(pad))
                    h.update(bytes(pad))
                    offset += pad
                data = memoryview(arr).cast("B") if arr.size else b""
                f.write(data)
                h.update(data)
                arrays.append({"bucket": i, "name": name, "dtype": arr.dtype.str,
                               "shape": list(arr.shape), "offset": offset,
                               "nbytes": arr.nbytes})
                offset += arr.nbytes
    manifest = {"format": CACHE_FORMAT, **meta, "data_size": offset,
                "data_xxh3_128": h.hexdigest(), "n_buckets": len(buckets), "arrays": arrays}
    os.replace(d / ("data.bin" + tag), d / "data.bin")
    (d / ("manifest.json" + tag)).write_text(json.dumps(manifest, indent=1))
    os.replace(d / ("manifest.json" + tag), d / "manifest.json")


class CacheInvalid(Exception):
    """The cache is missing, stale or corrupted (the message says which)."""


def read_cache(root: Path, version_hash: str, n_structures: int) -> tuple[dict, list[dict]]:
    """(manifest, buckets) from the cache, verified; raises :class:`CacheInvalid`."""
    d = _cache_dir(root, version_hash)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except FileNotFoundError:
        raise CacheInvalid("missing") from None
    except (OSError, ValueError) as exc:
        raise CacheInvalid(f"corrupted manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise CacheInvalid("stale format")
    if manifest.get("hash") != version_hash or manifest.get("n_structures") != n_structures:
        raise CacheInvalid("stale (other version content)")
    path = d / "data.bin"
    try:
        size = path.stat().st_size
        if size != manifest["data_size"]:
            raise CacheInvalid(f"corrupted data (size {size} != {manifest['data_size']})")
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise CacheInvalid(f"unreadable data ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise CacheInvalid(f"corrupted manifest ({exc})") from None
    if len(buf) != size or xxhash.xxh3_128_hexdigest(buf) != manifest.get("data_xxh3_128"):
        raise CacheInvalid("corrupted data (checksum mismatch)")
    buckets: list[dict] = [{} for _ in range(manifest["n_buckets"])]
    try:
        for a in manifest["arrays"]:
            view = buf[a["offset"]: a["offset"] + a["nbytes"]]
            buckets[a["bucket"]][a["name"]] = view.view(np.dtype(a["dtype"])).reshape(a["shape"])
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise CacheInvalid(f"corrupted manifest ({exc})") from None
    return manifest, buckets


# ------------------------------------------------------------------------ mixin
def materialize(reg, ref: str, *, cache: bool = True,
                cache_dir: str | Path | None = None) -> Materialized:
    """Training arrays of the dataset version ``ref`` (see the module doc for layout).

    With ``cache`` (default), arrays are read from ``cache_dir`` (``NNP_CACHE``) when a
    verified copy for the version hash exists, else read from the database and cached.
    """
    t0 = time.perf_counter()
    info = resolve_dataset(reg, ref)
    params = info["params"] or {}
    delta = params.get("delta")
    target = f"{delta['high']}-{delta['low']}" if delta else info["levels"][0]
    root = Path(cache_dir) if cache_dir else cache_root()
    if cache:
        _check_cache_root(root, "cache_dir" if cache_dir else "NNP_CACHE")
    status = "off"
    buckets = None
    if cache:
        try:
            _, buckets = read_cache(root, info["hash"], info["n_structures"])
            status = "hit"
        except CacheInvalid as exc:
            status = "miss" if str(exc) == "missing" else f"rebuilt: {exc}"
    source = "cache" if buckets is not None else reg.dialect
    with reg.session() as s:
        lvs = {lv.name: lv for lv in s.scalars(
            select(LevelOfTheory).where(LevelOfTheory.name.in_(info["levels"])))}
        level_ids = [lvs[n].id for n in info["levels"]]
        if buckets is None:
            buckets = read_buckets(reg.engine.connect, reg.dialect, info["id"],
                                   level_ids, bool(delta), info["n_structures"])
        refs = [dict(s.execute(select(ReferenceEnergy.z, ReferenceEnergy.energy)
                               .where(ReferenceEnergy.level_id == lid)).all())
                for lid in (level_ids[:2] if delta else level_ids[:1])]
    if cache and status != "hit":
        try:
            write_cache(root, {"hash": info["hash"], "ref": info["ref"],
                               "levels": info["levels"], "target": target,
                               "n_structures": info["n_structures"]}, buckets)
        except OSError as exc:
            where = "cache_dir" if cache_dir else "NNP_CACHE"
            raise BadInput(f"cannot write the materialize cache under {where}={str(root)!r}: "
                           f"{exc.strerror or exc} ({exc.filename or root}); fix it or "
                           f"materialize without the cache") from None
    missing = _attach_reference(buckets, refs)
    return Materialized(info["ref"], info["hash"], info["levels"], target, buckets, source,
                        status, time.perf_counter() - t0, missing)


def _attach_reference(buckets: list[dict], refs: list[dict]) -> list[str]:
    """Add ``energy_ref`` (target's atomic reference energies summed); list elements
    that have none (their contribution is 0)."""
    table = np.zeros(256)
    known = np.zeros(256, dtype=bool)
    known[0] = True
    for sign, r in zip((1.0, -1.0), refs, strict=False):
        for z, e in r.items():
            table[z] += sign * e
            known[z] = True
    if not any(refs):  # no reference energies: nothing to add, nothing missing
        for b in buckets:
            b["energy_ref"] = np.zeros(len(b["energy"]))
        return []
    seen = np.zeros(256, dtype=bool)
    for b in buckets:
        b["energy_ref"] = table[b["numbers"]].sum(axis=1)
        seen |= np.bincount(b["numbers"].ravel(), minlength=256) > 0
    return [SYMBOLS[z] for z in np.flatnonzero(seen & ~known)]
