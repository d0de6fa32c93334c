"""File ingest in two passes over chunks: all-or-nothing, with one chunk of arrays in memory.

Pass 1 reads the files a chunk of ``batch_size`` frames at a time
(:func:`registry.io.readers.each_chunk`), validates and hashes each chunk and spills its
arrays, hashes and canonical atom order to a temporary folder (``TMPDIR``), keeping in memory
only each frame's structure hash (32 bytes) and which levels it carries. Then, before
anything is written, the whole input is judged: duplicate frames are found from the hashes,
two frames of one structure with different labels at one level refuse the input (their label
hashes are computed, from the spilled chunks, only where a structure carries a level more than
once), and the input's compositions are created and committed. Pass 2 loads the chunks back
and writes the structures first seen in each, with their labels, as one
transaction (:func:`registry.ingest.api.write_parts`). Every frame read from a file carries
the one level being ingested (frames without it are skipped at reading), so a structure's
first frame also writes its label.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

from ..chem.frames import LABEL_FIELDS, FrameBatch, LabelColumns
from ..chem.identity import structure_hashes
from ..chem.units import energy_factor
from ..errors import BadInput
from ..io.readers import ReadOptions, each_chunk, open_file
from ..store.artifacts import sha256_file
from ..store.levels import canonical_name, ensure_level
from ..store.runs import RunHandle, run
from .api import IngestSummary, Progress, gc_paused, write_parts
from .compositions import PendingCompositions, merge_compositions, plan_compositions
from .prepare import Plan, PreparedBatch, label_digests, prepare_part
from .writers import WriteCounts


class _Spill:
    """Validated chunks on disk, one file each: a JSON header (the arrays' names, levels,
    sources, info), then the arrays in ``.npy`` format (no pickle, no zip); the frame names
    apart, read only for an error message."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="nnp-ingest-")
        self.count = 0
        # chunks are written on a helper thread (file writes release the GIL) while the
        # next one is read and hashed
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nnp-spill")
        self._pending: list = []

    def _path(self, k: int) -> str:
        return os.path.join(self._dir.name, f"{k}.chunk")

    def put(self, b: FrameBatch, hex_hashes: np.ndarray, order: np.ndarray) -> None:
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
            index = {s: i for i, s in enumerate(sources)}
            arrays["source_index"] = np.array([index[s] for s in b.sources], dtype=np.int32)
        head = json.dumps({"arrays": list(arrays), "levels": levels, "sources": sources,
                           "infos": b.infos}).encode()
        while self._pending:  # at most one chunk waits to be written: memory stays bounded
            self._pending.pop(0).result()
        self._pending.append(self._writer.submit(self._write, self._path(self.count), head,
                                                 list(arrays.values()), b.frame_names))
        self.count += 1

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

    def close(self) -> None:
        self._writer.shutdown(wait=True, cancel_futures=True)
        self._dir.cleanup()


@dataclass
class _Pass1:
    """What pass 1 keeps per frame (in file order) and per chunk."""

    hashes: list[np.ndarray] = field(default_factory=list)  # per chunk: (n,) S32 digests
    present: list[dict[str, np.ndarray]] = field(default_factory=list)  # per chunk, level
    comps: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (zs, counts)

    def add(self, batch: FrameBatch, hashes: list[str]) -> None:
        self.hashes.append(np.frombuffer(bytes.fromhex("".join(hashes)), dtype="S32"))
        self.present.append({lv: c.present.astype(bool) for lv, c in batch.labels.items()})
        c = plan_compositions(batch.numbers, batch.offsets)
        self.comps.append((c.zs, c.counts))

    def truncate(self, k: int) -> None:
        del self.hashes[k:], self.present[k:], self.comps[k:]


@dataclass
class _Plan:
    """The whole input judged: the frames that write their structure (with its labels)."""

    bounds: np.ndarray  # (chunks + 1,) first frame of each chunk
    first: np.ndarray  # (N,) bool: first frame of its structure
    levels: list[str]
    duplicates: int


def _judge(p1: _Pass1) -> tuple[_Plan, np.ndarray, dict[str, np.ndarray]]:
    """The plan, every frame's structure hash, and per level the frames to compare (those
    of a structure found more than once)."""
    bounds = np.concatenate([[0], np.cumsum([len(h) for h in p1.hashes])]).astype(np.int64)
    digests = np.concatenate(p1.hashes)
    p1.hashes = [digests]  # one copy, not two
    n = len(digests)
    by_hash = np.argsort(digests, kind="stable")  # ties stay in file order
    starts = np.ones(n, dtype=bool)  # first of a run of equal hashes, in hash order
    for lo in range(1, n, 1 << 20):  # in slices: no second copy of every digest
        hi = min(lo + (1 << 20), n)
        starts[lo:hi] = digests[by_hash[lo:hi]] != digests[by_hash[lo - 1:hi - 1]]
    first = np.zeros(n, dtype=bool)
    first[by_hash[starts]] = True
    runs = np.diff(np.append(np.flatnonzero(starts), n))
    repeated = np.sort(by_hash[np.repeat(runs > 1, runs)])  # in file order
    levels = sorted({lv for per in p1.present for lv in per})
    suspects = {}
    for level in levels:
        if not all(level in per and per[level].all() for per in p1.present):
            # every frame read from a file carries the one level ingested (or is skipped)
            raise AssertionError(f"level {level} is missing on some frames")
        if len(repeated):
            suspects[level] = repeated
    return _Plan(bounds, first, levels, n - int(starts.sum())), digests, suspects


def _check_conflicts(spill: _Spill, plan: _Plan, suspects: dict[str, np.ndarray],
                     digests: np.ndarray) -> None:
    """Refuse the input if one structure carries two different labels at one level."""
    for level, frames in suspects.items():
        chunk_of = np.searchsorted(plan.bounds, frames, side="right") - 1
        label_hash, names = {}, {}
        for k in np.unique(chunk_of).tolist():
            batch, hex_hashes, order = spill.get(k)
            batch.frame_names = spill.names(k)
            local = frames[chunk_of == k] - plan.bounds[k]
            got = label_digests(level, batch.labels[level], batch.offsets, order, hex_hashes,
                                local)
            for i, d in zip(local.tolist(), got, strict=True):
                label_hash[i + int(plan.bounds[k])] = d
                names[i + int(plan.bounds[k])] = batch.name(i)
        seen: dict[bytes, tuple[int, str]] = {}
        for i in frames.tolist():  # in file order
            j, d = seen.setdefault(digests[i], (i, label_hash[i]))
            if d != label_hash[i]:
                raise BadInput(f"conflicting {level} labels for one structure inside the "
                               f"input: {names[j]} and {names[i]} are the same structure "
                               f"with different values")


def _part(spill: _Spill, plan: _Plan, k: int, ids: dict[str, int], blob) -> PreparedBatch:
    """The rows chunk ``k`` writes: the structures first seen in it, in hash order, with
    their labels."""
    batch, hex_hashes, order = spill.get(k)
    local = np.flatnonzero(plan.first[plan.bounds[k]:plan.bounds[k + 1]])
    keep = local[np.argsort(hex_hashes[local], kind="stable")]
    slots = np.arange(len(keep))
    levels = [(lv, c, keep, slots) for lv, c in batch.labels.items()]
    comps = plan_compositions(batch.numbers, batch.offsets)
    comps.ids = np.array([ids[h] for h in comps.hill], dtype=np.int64)
    p = Plan(hashes=hex_hashes.astype("U64").tolist(), hex=hex_hashes,
             numbers=batch.numbers, offsets=batch.offsets.astype(np.int64), order=order,
             keep=keep, levels=levels, duplicates_in_input=0, compositions=comps)
    return prepare_part(batch, p, 0, len(keep), blob)


@dataclass
class ReadFiles:
    """Pass 1 of some files: their validated, hashed chunks spilled to disk, ready to write
    (:func:`write_files`) or to drop (:meth:`close`)."""

    spill: _Spill
    p1: _Pass1
    inputs: list[dict]  # one run input per file: path, sha256, size, format, frames, reader
    reports: list
    t0: float

    def close(self) -> None:
        self.spill.close()


def read_files(paths: Sequence[str | os.PathLike], opts: ReadOptions, *,
               batch_size: int = 20000, on_file: Progress | None = None) -> ReadFiles:
    """Pass 1: read, check and hash every file (errors: BadInput, nothing kept)."""
    t0 = time.perf_counter()
    energy_factor(opts.units)  # unknown units: an error before reading anything
    if not paths:
        raise BadInput("no input files given")
    paths = [str(p) for p in paths]
    reports = [open_file(p) for p in paths]
    spill, p1 = _Spill(), _Pass1()

    def consume(batch: FrameBatch) -> None:
        batch.validate()
        batch.labels = {canonical_name(k): v for k, v in batch.labels.items()}
        hashes, order = structure_hashes(
            batch.numbers.astype(np.int64), batch.positions, batch.offsets.astype(np.int64),
            batch.cells.astype(np.float64), batch.pbc.astype(bool), np.asarray(batch.charge),
            np.asarray(batch.multiplicity), threads=2)
        spill.put(batch, np.array(hashes, dtype="S64"), order)
        p1.add(batch, hashes)

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="nnp-sha256") as sha_pool, gc_paused():
            shas = [sha_pool.submit(sha256_file, p) for p in paths]
            for i, report in enumerate(reports):
                mark = spill.count

                def restart(mark=mark):
                    spill.truncate(mark)
                    p1.truncate(mark)

                each_chunk(report, opts, batch_size, consume, restart)
                if on_file:
                    on_file(i + 1, len(paths))
            spill.flush()
            inputs = [file_input(r, sha) for r, sha in zip(reports, shas, strict=True)]
    except BaseException:
        spill.close()
        raise
    return ReadFiles(spill, p1, inputs, reports, t0)


def file_input(report, sha) -> dict:
    """The run input recording one file (``sha``: the future of its :func:`sha256_file`)."""
    try:
        digest, size = sha.result()
    except OSError as exc:
        raise BadInput(f"{report.path}: cannot read it: {exc.strerror or exc}") from None
    item = {"entity_type": "file", "ref": report.path, "sha256": digest, "size": size,
            "format": report.format, "frames": report.frames,
            "frames_skipped": report.skipped, "reader": report.reader}
    if report.fallback:
        item["fallback"] = report.fallback
    return item


def ingest_files_streaming(reg, paths: Sequence[str | os.PathLike], opts: ReadOptions, *,
                           batch_size: int = 20000, on_file: Progress | None = None,
                           on_progress: Progress | None = None,
                           params: dict | None = None) -> IngestSummary:
    """Read, check and hash every file (pass 1), then write (pass 2); one ingest run whose
    inputs list each file with its sha256, size, format and the reader that read it."""
    read = read_files(paths, opts, batch_size=batch_size, on_file=on_file)
    try:
        return write_files(reg, read, on_progress=on_progress, params=params)
    finally:
        read.close()


def write_files(reg, read: ReadFiles, *, on_progress: Progress | None = None,
                params: dict | None = None, handle: RunHandle | None = None) -> IngestSummary:
    """Pass 2 of :func:`read_files`: as a new ingest run (``params``), or as part of the
    running run ``handle``, which collects its inputs (files, levels); its owner records
    them and the result when the run finishes."""
    return _write(reg, read.spill, read.p1, read.inputs, read.reports, on_progress, params,
                  read.t0, handle)


def _write(reg, spill: _Spill, p1: _Pass1, inputs: list[dict], reports, on_progress,
           params, t0: float, part_of: RunHandle | None = None) -> IngestSummary:
    """Judge the whole input, create its compositions, then pass 2: write the chunks."""
    # the compositions are created on another connection while the input is judged, and
    # committed only if it is good
    with PendingCompositions(reg.engine, merge_compositions(p1.comps)) as pending:
        plan, digests, suspects = _judge(p1)
        if suspects:
            _check_conflicts(spill, plan, suspects, digests)
        pending.commit()
    ids = dict(zip(pending.comps.hill, pending.comps.ids.tolist(), strict=True))
    level_ids = {lv: ensure_level(reg, lv)["id"] for lv in plan.levels}
    blob = bytes if reg.dialect == "postgresql" else bytearray  # see prepare_part
    chunks = [k for k in range(len(plan.bounds) - 1)  # (a chunk of repeats writes nothing)
              if plan.first[plan.bounds[k]:plan.bounds[k + 1]].any()]
    total = int(plan.first.sum())
    with (nullcontext(part_of) if part_of is not None
          else run(reg, "ingest", params)) as handle:
        for item in inputs:
            handle.consumed(**item)
        for lv, lid in level_ids.items():
            handle.consumed("level", lid, ref=lv)
        summary = IngestSummary(frames_read=len(digests),
                                frames_skipped=sum(r.skipped for r in reports),
                                duplicates_in_input=plan.duplicates, run_id=handle.id)
        totals = WriteCounts()
        tasks = [lambda k=k: _part(spill, plan, k, ids, blob) for k in chunks]
        try:
            write_parts(reg, tasks, total, level_ids, handle, totals, on_progress)
        finally:  # what was committed is recorded, also when the ingest fails
            summary.add(totals)
            summary.seconds = round(time.perf_counter() - t0, 4)
            handle.result = summary.run_result()
    return summary
