"""``nnp ingest SHARD... --parallel N``: shards read on Dask workers, written by concurrent
transactions, as one ingest run.

Two phases, so that bad input still writes nothing:

1. every shard is read, checked and hashed on a worker (:func:`registry.ingest.pass1.read_files`),
   its chunks spilled on that worker's disk and kept in the worker process;
2. only if every shard passed, each shard is written by the worker that read it (pinned
   there, where its spill is), in its own transactions, concurrently with the others. The
   writers' concurrent path never stores a structure twice: a structure in two shards is
   written by one and counted as existing by the other; two different labels for it at one
   level are reported as conflicts (within one shard they refuse the input, as in a serial
   ingest).

If any shard fails in phase 1, the others' spills are dropped and the error is raised;
the run is recorded as failed. The run lists every shard (path, sha256, size, reader) and
level; its result adds up the shards' counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields

from registry.ingest.api import IngestSummary
from registry.ingest.writers import WriteCounts

_READS: dict = {}  # per worker process: token -> ReadFiles awaiting its write


def _read_shard(token: str, path: str, opts, batch_size: int) -> dict:
    from distributed import get_worker

    from registry.ingest.pass1 import read_files

    read = read_files([path], opts, batch_size=batch_size)
    _READS[token] = read
    return {"token": token, "worker": get_worker().address}


def _write_shard(token: str, url: str, run_id: int) -> tuple[dict, list[dict]]:
    from registry.core import Registry
    from registry.ingest.stream import write_files
    from registry.store.runs import RunHandle

    read = _READS.pop(token)
    try:
        handle = RunHandle(run_id, "ingest")
        with Registry(url) as reg:
            summary = write_files(reg, read, handle=handle)
        return summary.to_dict(), handle.inputs
    finally:
        read.close()


def _drop_shard(token: str) -> None:
    read = _READS.pop(token, None)
    if read is not None:
        read.close()


def ingest_shards(reg, paths: Sequence[str], opts, *, parallel: int, batch_size: int = 20000,
                  params: dict | None = None, on_file: Callable | None = None,
                  on_progress: Callable | None = None) -> IngestSummary:
    """Ingest ``paths`` (one shard each) on a Dask cluster of ``parallel`` workers (or the
    one at ``NNP_DASK_SCHEDULER``) as one run; see the module docstring."""
    from distributed import as_completed, wait

    from pipelines.cluster import dask_client
    from registry.errors import BadInput
    from registry.store.runs import finish_run, start_run

    t0 = time.perf_counter()
    paths = [str(p) for p in paths]
    if not paths:
        raise BadInput("no input files given")
    if len(set(paths)) < len(paths):
        raise BadInput("a shard is named twice")
    with dask_client(parallel) as client:
        handle = start_run(reg, "ingest", params)
        summary = IngestSummary(run_id=handle.id)
        try:
            tokens = [uuid.uuid4().hex for _ in paths]
            reads = [client.submit(_read_shard, t, p, opts, batch_size, pure=False)
                     for t, p in zip(tokens, paths, strict=True)]
            for n, _ in enumerate(as_completed(reads), 1):
                if on_file:
                    on_file(n, len(paths))
            wait(reads)
            failed = [f for f in reads if f.status != "finished"]
            if failed:
                for f in reads:
                    if f.status == "finished":
                        r = f.result()
                        client.submit(_drop_shard, r["token"], workers=[r["worker"]],
                                      pure=False).result()
                raise failed[0].exception()
            done = [f.result() for f in reads]
            writes = [client.submit(_write_shard, r["token"], reg.url, handle.id,
                                    workers=[r["worker"]], allow_other_workers=False,
                                    pure=False) for r in done]
            inputs: list[dict] = []
            seen_levels: set = set()
            for n, f in enumerate(as_completed(writes), 1):
                counts, shard_inputs = f.result()
                summary.add(WriteCounts(**{k.name: counts[k.name]
                                           for k in fields(WriteCounts)}))
                for k in ("frames_read", "frames_skipped", "duplicates_in_input"):
                    setattr(summary, k, getattr(summary, k) + counts[k])
                for item in shard_inputs:
                    if item["entity_type"] == "level":
                        if item["entity_id"] in seen_levels:
                            continue
                        seen_levels.add(item["entity_id"])
                    inputs.append(item)
                if on_progress:
                    on_progress(n, len(paths))
            handle.inputs = sorted(inputs, key=lambda e: (e["entity_type"], e["ref"] or ""))
        except BaseException as exc:
            _record(handle, summary, t0)
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                finish_run(reg, handle, status, error=f"{type(exc).__name__}: {exc}")
            except Exception:  # never hide the original error behind the bookkeeping
                pass
            raise
        _record(handle, summary, t0)
        finish_run(reg, handle, "ok")
    return summary


def _record(handle, summary: IngestSummary, t0: float) -> None:
    summary.seconds = round(time.perf_counter() - t0, 4)
    handle.result = summary.run_result()
