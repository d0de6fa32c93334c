"""Diversity maps and numbers in the registry: artifacts and run records, no tables of their own.

A **map** (one element) is a safetensors artifact (no pickle) holding, per point:
``coords`` (n, 2), ``features`` (n, D) float32, ``structure_id``, ``atom``, ``member`` (n, R:
which of the map's dataset versions hold the structure), ``iteration`` (n, R, −1 where not a
member), ``split``, ``energy`` (eV/atom above the reference energies) and ``transformed``
(placed by ``transform`` into an earlier map rather than fitted), plus a JSON metadata entry
``nnp_diversity_map`` (versions, feature key, element, perplexity, seed, sample, element
counts, keys, the map it extends). The ``diversity`` run that made it records it as an output
edge ``diversity_map``: ``ref`` the map's input key (:func:`map_key`), ``sha256``, and
``meta`` {family, version_ids, n_points, sample, uri, size}; it is found again by that key.

**Numbers** are output edges ``diversity_numbers`` of the run, one per dataset version
analysed: ``entity_id`` the version's id, ``ref`` ``NAME:V``, ``meta`` {features, key,
reference, elements: {symbol: numbers}}; ``nnp dataset show`` lists the newest per feature
source (:func:`stored_numbers`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from registry.errors import NotFound
from registry.models.weights import check_safetensors
from registry.store.artifacts import ArtifactCorrupt
from registry.store.runs import edge, find_outputs

RUN_KIND = "diversity"
MAP = "diversity_map"
NUMBERS = "diversity_numbers"
PNG = "diversity_png"
FORMAT = 2  # 2: AEVs of periodic frames computed one frame at a time
_META = "nnp_diversity_map"
_ARRAYS = {"coords": np.float32, "features": np.float32, "structure_id": np.int64,
           "atom": np.int32, "member": np.uint8, "iteration": np.int32, "split": np.int8,
           "energy": np.float64, "transformed": np.uint8}


def digest(obj) -> str:
    """sha256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def family_key(features: dict, element: str, perplexity: float, seed: int) -> str:
    """Maps that can extend one another: same features, element, perplexity and seed."""
    return digest({"features": features, "element": element, "perplexity": float(perplexity),
                   "seed": int(seed), "format": FORMAT})


def map_key(family: str, hashes: list[str], sample: int) -> str:
    """A map's inputs: its family, the set of dataset version hashes, the sample size."""
    return digest({"family": family, "versions": sorted(set(hashes)), "sample": int(sample)})


@dataclass
class StoredMap:
    """One element's map (see the module docstring); ``meta["refs"]`` names ``member``'s
    columns."""

    meta: dict
    coords: np.ndarray
    features: np.ndarray
    structure_id: np.ndarray
    atom: np.ndarray
    member: np.ndarray
    iteration: np.ndarray
    split: np.ndarray
    energy: np.ndarray
    transformed: np.ndarray
    sha256: str | None = None
    uri: str | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.coords)

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        arrays = {k: np.ascontiguousarray(getattr(self, k), dtype=t) for k, t in _ARRAYS.items()}
        return save(arrays, metadata={_META: json.dumps({"format": FORMAT, **self.meta},
                                                        sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes, sha256: str | None = None, uri: str | None = None):
        from safetensors.numpy import load

        meta = json.loads(check_safetensors(data, "diversity map")["__metadata__"][_META])
        if meta.pop("format", None) != FORMAT:
            raise ValueError("diversity map of another format")
        arrays = load(data)
        arrays["member"] = arrays["member"].astype(bool)
        arrays["transformed"] = arrays["transformed"].astype(bool)
        return cls(meta=meta, sha256=sha256, uri=uri, **arrays)


def save_map(reg, m: StoredMap) -> dict:
    """Put the map in the artifact store; returns its output edge for the run."""
    sha, size, uri = reg.artifacts.put(m.to_bytes())
    m.sha256, m.uri = sha, uri
    return edge(MAP, ref=m.meta["key"], sha256=sha, family=m.meta["family"],
                element=m.meta["element"], version_ids=m.meta["version_ids"],
                n_points=len(m), sample=m.meta["sample"], uri=uri, size=size)


def load_map(reg, e: dict) -> StoredMap | None:
    """The map of edge ``e``, verified; None when its artifact is gone or unreadable."""
    meta = e.get("meta") or {}
    try:
        data = reg.artifacts.get(e["sha256"], meta.get("uri"))
        return StoredMap.from_bytes(data, e["sha256"], meta.get("uri"))
    except (NotFound, ArtifactCorrupt, ValueError, KeyError):
        return None


def find_map(reg, key: str) -> StoredMap | None:
    """The newest stored map made from exactly these inputs (:func:`map_key`)."""
    for e in find_outputs(reg, MAP, ref=key, run_kind=RUN_KIND, limit=10):
        m = load_map(reg, e)
        if m is not None:
            return m
    return None


def find_base(reg, family: str, version_ids: list[int], sample: int) -> StoredMap | None:
    """The largest stored map of ``family`` (same sample size) whose dataset versions are all
    among ``version_ids`` but not all of them: new points can be added to it."""
    want = set(version_ids)
    best = []
    for e in find_outputs(reg, MAP, run_kind=RUN_KIND, limit=500):
        meta = e.get("meta") or {}
        have = set(meta.get("version_ids") or [])
        if (meta.get("family") == family and meta.get("sample") == sample and have
                and have < want):
            best.append((len(have), meta.get("n_points", 0), e["run_id"], e))
    for *_, e in sorted(best, key=lambda b: b[:3], reverse=True):
        m = load_map(reg, e)
        if m is not None:
            return m
    return None


def numbers_edge(version_id: int, ref: str, payload: dict) -> dict:
    return edge(NUMBERS, entity_id=int(version_id), ref=ref, **payload)


def stored_numbers(reg, dataset_ref: str) -> list[dict]:
    """The newest diversity numbers of a dataset version per feature source and reference:
    ``[{"features", "reference", "run_id", "elements": {symbol: numbers}}]``."""
    info = reg.resolve_dataset(dataset_ref)
    seen, out = set(), []
    for e in find_outputs(reg, NUMBERS, entity_id=info["id"], run_kind=RUN_KIND):
        meta = e.get("meta") or {}
        tag = (meta.get("features"), meta.get("reference"))
        if tag in seen:
            continue
        seen.add(tag)
        out.append({"features": meta.get("features"), "reference": meta.get("reference"),
                    "run_id": e["run_id"], "elements": meta.get("elements") or {}})
    return out
