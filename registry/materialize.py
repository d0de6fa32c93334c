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
shape, offset of each array; size and sha256 of the data). A cache whose manifest, size,
format or sha256 does not match is rebuilt. numpy only; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from .config import DEFAULT_HOME
from .elements import SYMBOLS
from .schema import LevelOfTheory, ReferenceEnergy

CACHE_FORMAT = 1
_ALIGN = 64
_ZERO_CELL = bytes(72)


def cache_root() -> Path:
    """``NNP_CACHE`` or ``./.nnp/cache``."""
    return Path(os.environ.get("NNP_CACHE") or DEFAULT_HOME / "cache")


def bucket_size(n: np.ndarray) -> np.ndarray:
    """Padded size per atom count: exact up to 8, then quarter-power-of-two steps."""
    n = np.asarray(n, dtype=np.int64)
    p = 2 ** np.floor(np.log2(np.maximum(n, 1))).astype(np.int64)
    step = np.maximum(p // 4, 1)
    return np.where(n <= 8, n, -(-n // step) * step)


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


# ------------------------------------------------------------------------ DB read
def _fetch(conn, dialect: str, sql: str, params: tuple) -> list[tuple]:
    raw = conn.connection.driver_connection
    if dialect == "postgresql":
        sql = sql.replace("?", "%s")
        with raw.cursor(binary=True) as cur:
            cur.execute(sql, params, binary=True)
            return cur.fetchall()
    cur = raw.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()
    finally:
        cur.close()


_STRUCT_SQL = (
    "SELECT s.id, s.hash, s.n_atoms, s.numbers, s.positions, s.cell, s.pbc, m.split, "
    "l.energy, l.forces FROM dataset_members m JOIN labels l ON l.id = m.label_id "
    "JOIN structures s ON s.id = m.structure_id WHERE m.version_id = ? AND l.level_id = ?")
_LABEL_SQL = (
    "SELECT m.structure_id, l.energy, l.forces FROM dataset_members m "
    "JOIN labels l ON l.id = m.label_id WHERE m.version_id = ? AND l.level_id = ?")


def _floats(vals) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)


def read_version(conn, dialect: str, version_id: int, level_ids: list[int],
                 delta: bool) -> dict:
    """Flat (ragged) arrays of a version from the database, in structure-hash order."""
    rows = _fetch(conn, dialect, _STRUCT_SQL, (version_id, level_ids[0]))
    if not rows:
        return {"n": 0}
    sid, shash, nat, nums, pos, cell, pbc, split, energy, forces = zip(*rows, strict=True)
    key = np.fromiter((int(h[:16], 16) for h in shash), dtype=np.uint64, count=len(shash))
    order = np.argsort(key, kind="stable")
    sid = np.asarray(sid, dtype=np.int64)
    n_atoms = np.asarray(nat, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(n_atoms, dtype=np.int64)])
    flat = {
        "structure_id": sid, "n_atoms": n_atoms, "offsets": offsets,
        "numbers": np.frombuffer(b"".join(nums), dtype=np.uint8),
        "positions": np.frombuffer(b"".join(pos), dtype="<f8").reshape(-1, 3),
        "cell": np.frombuffer(b"".join(c or _ZERO_CELL for c in cell),
                              dtype="<f8").reshape(-1, 3, 3),
        "pbc": (np.asarray(pbc, dtype=np.int64)[:, None] >> np.arange(3)) & 1 == 1,
        "split": np.asarray(split, dtype=np.int8),
    }
    energies = [_floats(energy)]
    forces_l = [_ragged_forces(forces, n_atoms, offsets)]
    for lid in level_ids[1:]:
        other = _fetch(conn, dialect, _LABEL_SQL, (version_id, lid))
        o_sid, o_e, o_f = zip(*other, strict=True) if other else ((), (), ())
        o_sid = np.asarray(o_sid, dtype=np.int64)
        pos_in = np.argsort(o_sid)
        where = pos_in[np.searchsorted(o_sid, sid, sorter=pos_in)]
        energies.append(_floats(o_e)[where])
        forces_l.append(_ragged_forces([o_f[i] for i in where], n_atoms, offsets))
    flat["level_energy"] = np.stack(energies, axis=1)
    if delta:
        flat["energy"] = energies[0] - energies[1]
        flat["forces"] = forces_l[0] - forces_l[1]
    else:
        flat["energy"], flat["forces"] = energies[0], forces_l[0]
    flat["order"] = order
    return flat


def _ragged_forces(blobs, n_atoms, offsets) -> np.ndarray:
    """(N_total, 3) forces; structures without forces get NaN rows."""
    if all(b is not None for b in blobs):
        return np.frombuffer(b"".join(blobs), dtype="<f8").reshape(-1, 3)
    out = np.full((int(offsets[-1]), 3), np.nan)
    for i, b in enumerate(blobs):
        if b is not None:
            out[offsets[i]:offsets[i + 1]] = np.frombuffer(b, dtype="<f8").reshape(-1, 3)
    return out


def bucketize(flat: dict) -> list[dict[str, np.ndarray]]:
    """Pad the ragged arrays of :func:`read_version` into buckets by :func:`bucket_size`."""
    if flat.get("n") == 0:
        return []
    order, n_atoms, offsets = flat["order"], flat["n_atoms"], flat["offsets"]
    sizes = bucket_size(n_atoms)
    uniq, s_bucket = np.unique(sizes, return_inverse=True)
    s_order = order[np.argsort(s_bucket[order], kind="stable")]  # by bucket, then hash
    counts_b = np.bincount(s_bucket, minlength=len(uniq))
    starts_b = np.concatenate([[0], np.cumsum(counts_b)])
    s_row = np.empty(len(n_atoms), dtype=np.int64)
    s_row[s_order] = np.arange(len(n_atoms)) - np.repeat(starts_b[:-1], counts_b)
    counts = n_atoms.astype(np.int64)
    a_struct = np.repeat(np.arange(len(counts)), counts)
    a_col = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], counts)
    a_dst = s_row[a_struct] * sizes[a_struct] + a_col
    a_order = np.argsort(s_bucket[a_struct], kind="stable")
    a_starts = np.concatenate([[0], np.cumsum(np.bincount(s_bucket[a_struct],
                                                          minlength=len(uniq)))])
    buckets = []
    for k, size in enumerate(uniq.tolist()):
        idx = s_order[starts_b[k]:starts_b[k + 1]]
        src = a_order[a_starts[k]:a_starts[k + 1]]
        dst = a_dst[src]
        b = len(idx)
        out = {"structure_id": flat["structure_id"][idx], "n_atoms": n_atoms[idx],
               "split": flat["split"][idx], "cell": flat["cell"][idx], "pbc": flat["pbc"][idx],
               "energy": flat["energy"][idx]}
        nums = np.zeros(b * size, dtype=np.uint8)
        nums[dst] = flat["numbers"][src]
        out["numbers"] = nums.reshape(b, size)
        for name in ("positions", "forces"):
            arr = np.zeros((b * size, 3), dtype=np.float64)
            arr[dst] = flat[name][src]
            out[name] = arr.reshape(b, size, 3)
        if flat["level_energy"].shape[1] > 1:
            out["level_energy"] = flat["level_energy"][idx]
        buckets.append(out)
    return buckets


# ------------------------------------------------------------------------ cache
def _cache_dir(root: Path, version_hash: str) -> Path:
    return root / version_hash


def write_cache(root: Path, meta: dict, buckets: list[dict]) -> None:
    """Write ``data.bin`` then ``manifest.json`` (each via a temporary file + rename)."""
    d = _cache_dir(root, meta["hash"])
    d.mkdir(parents=True, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    arrays, offset, h = [], 0, hashlib.sha256()
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
                "data_sha256": h.hexdigest(), "n_buckets": len(buckets), "arrays": arrays}
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
        buf = np.empty(size, dtype=np.uint8)
        with open(path, "rb", buffering=0) as f:
            got = f.readinto(memoryview(buf))
    except OSError as exc:
        raise CacheInvalid(f"unreadable data ({exc})") from None
    if got != size or hashlib.sha256(memoryview(buf)).hexdigest() != manifest["data_sha256"]:
        raise CacheInvalid("corrupted data (sha256 mismatch)")
    buckets: list[dict] = [{} for _ in range(manifest["n_buckets"])]
    try:
        for a in manifest["arrays"]:
            view = buf[a["offset"]: a["offset"] + a["nbytes"]]
            buckets[a["bucket"]][a["name"]] = view.view(np.dtype(a["dtype"])).reshape(a["shape"])
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise CacheInvalid(f"corrupted manifest ({exc})") from None
    return manifest, buckets


# ------------------------------------------------------------------------ mixin
class MaterializeMixin:
    def materialize(self, ref: str, *, cache: bool = True,
                    cache_dir: str | Path | None = None) -> Materialized:
        """Training arrays of the dataset version ``ref`` (see the module doc for layout).

        With ``cache`` (default), arrays are read from ``cache_dir`` (``NNP_CACHE``) when a
        verified copy for the version hash exists, else read from the database and cached.
        """
        t0 = time.perf_counter()
        info = self.resolve_dataset(ref)
        params = info["params"] or {}
        delta = params.get("delta")
        target = f"{delta['high']}-{delta['low']}" if delta else info["levels"][0]
        root = Path(cache_dir) if cache_dir else cache_root()
        status = "off"
        buckets = None
        if cache:
            try:
                _, buckets = read_cache(root, info["hash"], info["n_structures"])
                status = "hit"
            except CacheInvalid as exc:
                status = "miss" if str(exc) == "missing" else f"rebuilt: {exc}"
        source = "cache" if buckets is not None else self.dialect
        with self.session() as s:
            lvs = {lv.name: lv for lv in s.scalars(
                select(LevelOfTheory).where(LevelOfTheory.name.in_(info["levels"])))}
            level_ids = [lvs[n].id for n in info["levels"]]
            if buckets is None:
                flat = read_version(s.connection(), self.dialect, info["id"], level_ids,
                                    bool(delta))
                buckets = bucketize(flat)
            refs = [dict(s.execute(select(ReferenceEnergy.z, ReferenceEnergy.energy)
                                   .where(ReferenceEnergy.level_id == lid)).all())
                    for lid in (level_ids[:2] if delta else level_ids[:1])]
        if cache and status != "hit":
            write_cache(root, {"hash": info["hash"], "ref": info["ref"],
                               "levels": info["levels"], "target": target,
                               "n_structures": info["n_structures"]}, buckets)
        missing = self._attach_reference(buckets, refs)
        return Materialized(info["ref"], info["hash"], info["levels"], target, buckets, source,
                            status, time.perf_counter() - t0, missing)

    @staticmethod
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
        seen = np.zeros(256, dtype=bool)
        for b in buckets:
            b["energy_ref"] = table[b["numbers"]].sum(axis=1)
            seen[np.unique(b["numbers"])] = True
        return [SYMBOLS[z] for z in np.flatnonzero(seen & ~known)] if any(refs) else []
