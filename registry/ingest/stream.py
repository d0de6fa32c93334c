"""File ingest in two passes over chunks: all-or-nothing, with one chunk of arrays in memory.

Pass 1 reads the files a chunk of ``batch_size`` frames at a time
(:func:`registry.io.readers.each_chunk`; a large HDF5 file in several processes,
:mod:`.pass1`), validates and hashes each chunk and spills its
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

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput
from ..store.levels import ensure_level
from ..store.runs import RunHandle, run
from .api import IngestSummary, Progress, write_parts
from .compositions import PendingCompositions, merge_compositions, plan_compositions
from .pass1 import ReadFiles
from .prepare import Plan, PreparedBatch, label_digests, prepare_part
from .spill import Pass1, Spill
from .writers import WriteCounts


@dataclass
class _Plan:
    """The whole input judged: the frames that write their structure (with its labels)."""

    bounds: np.ndarray  # (chunks + 1,) first frame of each chunk
    first: np.ndarray  # (N,) bool: first frame of its structure
    levels: list[str]
    duplicates: int


def _judge(p1: Pass1) -> tuple[_Plan, np.ndarray, dict[str, np.ndarray]]:
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


def _check_conflicts(spill: Spill, plan: _Plan, suspects: dict[str, np.ndarray],
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


def _part(spill: Spill, plan: _Plan, k: int, ids: dict[str, int], blob) -> PreparedBatch:
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


def write_files(reg, read: ReadFiles, *, on_progress: Progress | None = None,
                params: dict | None = None, handle: RunHandle | None = None) -> IngestSummary:
    """Pass 2 of :func:`read_files`: as a new ingest run (``params``), or as part of the
    running run ``handle``, which collects its inputs (files, levels); its owner records
    them and the result when the run finishes."""
    return _write(reg, read.spill, read.p1, read.inputs, read.reports, on_progress, params,
                  read.t0, handle)


def _write(reg, spill: Spill, p1: Pass1, inputs: list[dict], reports, on_progress,
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
