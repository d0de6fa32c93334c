"""Pass 1 of a file ingest: read, check and hash every chunk of every file, spilling them to
disk (:class:`~.spill.Spill`), before anything is written (pass 2: :mod:`.stream`).

Reading, checking and hashing hold Python's global interpreter lock (h5py calls, per-row
sha256 of short messages, building arrays), so threads of one process take turns on one
core. An ANI HDF5 file of at least :data:`MIN_BYTES` is therefore read by ``n`` forked
processes: each reads every ``n``-th chunk (:func:`registry.io.hdf5.iter_ani_h5_chunks`
with ``share``; the other groups are only counted from their shapes), checks and hashes it
and spills it into the ingest's folder; the parent gets each chunk's hashes, levels and
compositions back and keeps them in file order, as one process would have. Of several
errors, the one raised is the first in file order, the one a single process would meet.

This module imports neither SQLAlchemy nor the store, so that a caller can start the
readers first and import and open the database while they run (``while_reading``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..chem.frames import FrameBatch
from ..chem.identity import structure_hashes
from ..chem.units import energy_factor
from ..errors import BadInput
from ..io.readers import FileReport, ReadOptions, each_chunk, open_file
from ..store.artifacts import sha256_file
from ..store.names import level_form
from .gcpause import gc_paused
from .spill import Pass1, Spill

MIN_BYTES = 32 << 20  # below this, starting processes costs more than it saves
MAX_PROCESSES = 4
ENV = "NNP_INGEST_READERS"
Progress = Callable[[int, int], None]


@dataclass
class ReadFiles:
    """Pass 1 of some files: their validated, hashed chunks spilled to disk, ready to write
    (:func:`registry.ingest.stream.write_files`) or to drop (:meth:`close`)."""

    spill: Spill
    p1: Pass1
    inputs: list[dict]  # one run input per file: path, sha256, size, format, frames, reader
    reports: list
    t0: float

    def close(self) -> None:
        self.spill.close()


def read_files(paths: Sequence[str | os.PathLike], opts: ReadOptions, *,
               batch_size: int = 20000, on_file: Progress | None = None,
               while_reading: Callable[[], None] | None = None) -> ReadFiles:
    """Pass 1: read, check and hash every file (errors: BadInput, nothing kept).

    ``while_reading()`` is called once, while the first file's reader processes run (or
    before reading, when it is read in this process); its errors stop the readers."""
    t0 = time.perf_counter()
    energy_factor(opts.units)  # unknown units: an error before reading anything
    if not paths:
        raise BadInput("no input files given")
    paths = [str(p) for p in paths]
    reports = [open_file(p) for p in paths]
    spill, p1 = Spill(), Pass1()

    def consume(batch: FrameBatch) -> None:
        # the store's checks on level names (imported once the store may be open)
        from ..store.levels import canonical_name

        hashes, order = check(batch, threads=2, name_of=canonical_name)
        spill.put(batch, np.array(hashes, dtype="S64"), order)
        p1.add(batch, hashes)

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="nnp-sha256") as sha_pool, gc_paused():
            for i, report in enumerate(reports):
                procs = reader_processes(report)
                # forked before the hashing thread starts: the children copy fewer threads
                readers = Readers(report, opts, batch_size, spill, procs) if procs > 1 else None
                if i == 0:
                    try:
                        shas = [sha_pool.submit(sha256_file, p) for p in paths]
                        if while_reading:
                            while_reading()
                    except BaseException:
                        if readers:
                            readers.stop()
                        raise
                if readers:
                    readers.collect(spill, p1)
                else:
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


def check(batch: FrameBatch, threads: int,
          name_of: Callable[[str], str]) -> tuple[list[str], np.ndarray]:
    """Validate a chunk (BadInput naming the frame), spell its level names ``name_of``
    them; its structure hashes and canonical atom order."""
    batch.validate()
    batch.labels = {name_of(k): v for k, v in batch.labels.items()}
    return structure_hashes(
        batch.numbers.astype(np.int64), batch.positions, batch.offsets.astype(np.int64),
        batch.cells.astype(np.float64), batch.pbc.astype(bool), np.asarray(batch.charge),
        np.asarray(batch.multiplicity), threads=threads)


def reader_processes(report: FileReport) -> int:
    """How many processes read this file: ``NNP_INGEST_READERS`` if set (1: this process
    only), else up to :data:`MAX_PROCESSES` (one per usable core) for an ANI HDF5 file of at
    least :data:`MIN_BYTES`; always 1 where processes cannot be forked (only Linux is
    trusted with ``fork``) or may not have children (a daemonic process, e.g. a Dask
    worker: its cluster already reads shards in parallel)."""
    if (report.format != "ani-h5" or not sys.platform.startswith("linux")
            or mp.current_process().daemon):
        return 1
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise BadInput(f"{ENV}={env!r}: expected a whole number of processes >= 1")
        return n
    if os.path.getsize(report.path) < MIN_BYTES:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_PROCESSES))


class Readers:
    """``n`` processes reading one ANI HDF5 file into ``spill``, after the chunks already
    there (:meth:`collect` gathers them, :meth:`stop` drops them)."""

    def __init__(self, report: FileReport, opts: ReadOptions, size: int, spill: Spill,
                 n: int):
        self.report, self.opts, self.mark = report, opts, spill.count
        ctx = mp.get_context("fork")
        self.procs, self.conns = [], []
        try:
            for w in range(n):
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_share, name=f"nnp-read-{w}", daemon=True,
                                   args=(send, report.path, opts, size, (w, n),
                                         spill.directory, self.mark))
                with warnings.catch_warnings():
                    # Python >= 3.12 warns about forking a process that runs threads (e.g.
                    # the progress bar's): the child only reads, checks and writes its own
                    # files, and takes none of the locks those threads hold.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    proc.start()
                send.close()
                self.procs.append(proc)
                self.conns.append(recv)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the processes (what they spilled goes with the ingest's folder)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        for conn in self.conns:
            conn.close()

    def collect(self, spill: Spill, p1: Pass1) -> None:
        """Wait for the readers; their chunks join ``spill`` and ``p1`` in file order and
        ``report`` counts the file's frames (BadInput: the first error in file order)."""
        report = self.report
        results = []
        try:
            for proc, conn in zip(self.procs, self.conns, strict=True):
                try:
                    results.append(conn.recv())
                except EOFError:
                    proc.join()
                    code = proc.exitcode or 0
                    how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                           else f"exited with status {code}")
                    raise RuntimeError(f"{report.path}: a reader process {how} (out of "
                                       f"memory?); nothing was written") from None
        finally:
            self.stop()
        failed = [r for r in results if r[0] != "ok"]
        if failed:
            kind, _, message, *tb = min(failed, key=lambda r: (r[1], r[0] != "bad"))
            if kind == "bad":
                raise BadInput(message)
            exc = RuntimeError(f"{report.path}: a reader process failed: {message}; nothing "
                               f"was written")
            exc.add_note(f"the reader's traceback:\n{tb[0]}")
            raise exc
        if self.opts.level:  # the store's checks on the name the readers spelled
            from ..store.levels import canonical_name

            canonical_name(self.opts.level)
        chunks = sorted((c for r in results for c in r[1]), key=lambda c: c[0])
        for k, entry in chunks:
            if entry is None:  # every frame of that chunk was skipped
                continue
            if self.mark + k != spill.count:
                spill.move(self.mark + k, spill.count)
            spill.count += 1
            p1.append(entry)
        report.reader = "h5py"
        report.frames = sum(r[2] for r in results)
        report.skipped = sum(r[3] for r in results)
        if not report.frames:
            from ..io.hdf5 import no_frames_message

            raise BadInput(no_frames_message(report.path, report.skipped))


def _share(conn, path: str, opts: ReadOptions, size: int, share: tuple[int, int],
           directory: str, mark: int) -> None:
    """A reader process: check, hash and spill the chunks ``k % n == w`` of the file; send
    ``("ok", [(k, Pass1 entry or None)], frames, skipped)`` or ``(kind, k, message[,
    traceback])`` for the first error (``kind`` "bad" for bad input, else "error"), ``k`` the
    chunk it was met in."""
    from ..io.hdf5 import iter_ani_h5_chunks

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops its readers
    w, n = share
    report = FileReport(path, "ani-h5")
    spill = Spill(directory)
    chunks: list = []
    k = w  # the chunk being read: the next one of this share after the last yielded
    try:
        for k, batch in iter_ani_h5_chunks(path, opts, size, report, share):
            if batch is None:
                chunks.append((k, None))
            else:
                hashes, order = check(batch, threads=1, name_of=level_form)
                spill.put(batch, np.array(hashes, dtype="S64"), order, index=mark + k)
                chunks.append((k, Pass1.entry(batch, hashes)))
            k += n
        spill.flush()
        reply = ("ok", chunks, report.frames, report.skipped)
    except BadInput as exc:
        reply = ("bad", k, str(exc))
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which raises it)
        reply = ("error", k, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    finally:
        spill.close()
    try:
        conn.send(reply)
    finally:
        conn.close()
