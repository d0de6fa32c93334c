"""Pass 1's keep of a file ingest: validated chunks spilled to disk (:class:`Spill`) and
per frame only its structure hash and levels (:class:`Pass1`)."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..chem.frames import LABEL_FIELDS, FrameBatch, LabelColumns
from .composition_plan import plan_compositions


class Spill:
    """Validated chunks on disk, one file each: a JSON header (the arrays' names, levels,
    sources, info), then the arrays in ``.npy`` format (no pickle, no zip); the frame names
    apart, read only for an error message."""

    def __init__(self, directory: str | None = None):
        # ``directory``: another process's spill folder, whose chunks this one writes
        self._dir = tempfile.TemporaryDirectory(prefix="nnp-ingest-") if directory is None \
            else None
        self.directory = directory or self._dir.name
        self.count = 0
        # chunks are written on a helper thread (file writes release the GIL) while the
        # next one is read and hashed
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nnp-spill")
        self._pending: list = []

    def _path(self, k: int) -> str:
        return os.path.join(self.directory, f"{k}.chunk")

    def put(self, b: FrameBatch, hex_hashes: np.ndarray, order: np.ndarray,
            index: int | None = None) -> None:
        """Spill chunk ``index`` (default: the next one)."""
        arrays = {"numbers": b.numbers.astype(np.uint8), "positions": b.positions,
                  "offsets": b.offsets, "cells": b.cells, "pbc": b.pbc, "charge": b.charge,
                  "multiplicity": b.multiplicity, "hex": hex_hashes,
                  "order": order.astype(np.int32 if len(order) < 2 ** 31 else np.int64)}
        levels = []
        for i, (name, c) in enumerate(b.labels.items()):
            arrays[f"L{i}_present"] = c.present
            fields = [f for f in LABEL_FIELDS if getattr(c, f) is not None]
            arrays.update({f"L{i}_{f}": getattr(c, f) for f in fields})
            arrays.update({f"L{i}_mask_{m}": v for m, v in c.masks.items()})
            levels.append({"name": name, "status": c.status, "unit": c.source_unit,
                           "fields": fields, "masks": list(c.masks)})
        sources = sorted({s for s in b.sources}, key=str) if b.sources else None
        if sources and len(sources) > 1:
            number = {s: i for i, s in enumerate(sources)}
            arrays["source_index"] = np.array([number[s] for s in b.sources], dtype=np.int32)
        head = json.dumps({"arrays": list(arrays), "levels": levels, "sources": sources,
                           "infos": b.infos}).encode()
        while self._pending:  # at most one chunk waits to be written: memory stays bounded
            self._pending.pop(0).result()
        if index is None:
            index, self.count = self.count, self.count + 1
        self._pending.append(self._writer.submit(self._write, self._path(index), head,
                                                 list(arrays.values()), b.frame_names))

    @staticmethod
    def _write(path: str, head: bytes, arrays: list[np.ndarray], names) -> None:
        with open(path, "wb") as fh:
            fh.write(len(head).to_bytes(8, "little") + head)
            for arr in arrays:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
        with open(path + ".names", "w") as fh:  # read only to name frames in an error
            json.dump(names, fh)

    def names(self, k: int) -> list[str] | None:
        """The frame names of chunk ``k``."""
        self.flush()
        with open(self._path(k) + ".names") as fh:
            return json.load(fh)

    def flush(self) -> None:
        """Wait for the chunks being written (raising a write error, e.g. a full disk)."""
        for fut in self._pending:
            fut.result()
        self._pending = []

    def get(self, k: int) -> tuple[FrameBatch, np.ndarray, np.ndarray]:
        """(batch, hex hashes (S64), canonical atom order) of chunk ``k``."""
        self.flush()
        with open(self._path(k), "rb") as fh:
            meta = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            z = {name: np.lib.format.read_array(fh, allow_pickle=False)
                 for name in meta["arrays"]}
        n = len(z["offsets"]) - 1
        labels = {}
        for i, lv in enumerate(meta["levels"]):
            labels[lv["name"]] = LabelColumns(
                present=z[f"L{i}_present"], status=lv["status"], source_unit=lv["unit"],
                masks={m: z[f"L{i}_mask_{m}"] for m in lv["masks"]},
                **{f: z[f"L{i}_{f}"] for f in lv["fields"]})
        sources = meta["sources"]
        if sources and len(sources) > 1:
            sources = [sources[i] for i in z["source_index"].tolist()]
        elif sources:
            sources = sources * n
        batch = FrameBatch(
            numbers=z["numbers"].astype(np.int64), positions=z["positions"],
            offsets=z["offsets"], cells=z["cells"], pbc=z["pbc"], charge=z["charge"],
            multiplicity=z["multiplicity"], labels=labels, sources=sources,
            infos=meta["infos"])
        return batch, z["hex"], z["order"].astype(np.int64)

    def truncate(self, k: int) -> None:
        self.flush()
        for j in range(k, self.count):
            os.unlink(self._path(j))
            os.unlink(self._path(j) + ".names")
        self.count = k

    def move(self, k: int, to: int) -> None:
        """Renumber chunk ``k`` as ``to``."""
        for end in ("", ".names"):
            os.replace(self._path(k) + end, self._path(to) + end)

    def close(self) -> None:
        self._writer.shutdown(wait=True, cancel_futures=True)
        if self._dir is not None:
            self._dir.cleanup()


@dataclass
class Pass1:
    """What pass 1 keeps per frame (in file order) and per chunk."""

    hashes: list[np.ndarray] = field(default_factory=list)  # per chunk: (n,) S32 digests
    present: list[dict[str, np.ndarray]] = field(default_factory=list)  # per chunk, level
    comps: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (zs, counts)

    def add(self, batch: FrameBatch, hashes: list[str]) -> None:
        self.append(self.entry(batch, hashes))

    @staticmethod
    def entry(batch: FrameBatch, hashes: list[str]) -> tuple:
        """What is kept of one chunk (:meth:`append` takes it, also from another process)."""
        comps = plan_compositions(batch.numbers, batch.offsets)
        return (np.frombuffer(bytes.fromhex("".join(hashes)), dtype="S32"),
                {lv: c.present.astype(bool) for lv, c in batch.labels.items()},
                (comps.zs, comps.counts))

    def append(self, entry: tuple) -> None:
        digests, present, comps = entry
        self.hashes.append(digests)
        self.present.append(present)
        self.comps.append(comps)

    def truncate(self, k: int) -> None:
        del self.hashes[k:], self.present[k:], self.comps[k:]
