"""Deduplicated bulk ingest: validate everything, then write batch by batch.

Bad input is refused before anything is written: the whole input is validated and hashed
(:func:`.prepare.plan_batch`) first; the input's compositions are created meanwhile on
another connection and committed only if the plan succeeds. Writing happens in batches of
``batch_size`` structures, each one transaction, so a killed ingest leaves only whole batches
and re-running it completes the job without duplicates. The rows of batch k+1 are prepared in
a helper thread while batch k is written (numpy, hashlib and the database drivers release the
GIL).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial

from sqlalchemy.exc import DBAPIError

from ..chem.frames import FrameBatch
from ..store.levels import canonical_name, ensure_level
from ..store.runs import RunHandle, run
from ..store.schema import utcnow
from .compositions import PendingCompositions
from .gcpause import gc_paused
from .prepare import PreparedBatch, input_compositions, plan_batch, prepare_part
from .writers import WRITERS, WriteCounts

Progress = Callable[[int, int], None]
_RETRIES = 5
_PG_WRITERS = 2  # parts written at once on PostgreSQL


@dataclass
class IngestSummary(WriteCounts):
    """What an ingest did: the write counts plus input figures (``--json`` prints
    :meth:`to_dict`)."""

    frames_skipped: int = 0
    frames_read: int = 0
    duplicates_in_input: int = 0
    run_id: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def run_result(self) -> dict:
        """The ingest run's recorded result: the counts and the first 20 conflicts."""
        out = {k: v for k, v in self.to_dict().items() if k != "conflicts"}
        out["conflicts_sample"] = self.conflicts[:20]
        return out


def ingest(reg, frames, level: str | None = None, *, units: str = "eV",
           energy_key: str | None = None, forces_key: str | None = None,
           dipole_key: str | None = None, charges_key: str | None = None,
           skip_missing: bool = False, source: str | None = None,
           batch_size: int = 20000, on_progress: Progress | None = None) -> IngestSummary:
    """Ingest ASE ``Atoms`` (any iterable) or a :class:`FrameBatch`.

    With ``level``, labels are read from each frame (``energy_key`` etc., default the
    attached calculator's results or ``info['energy']`` / ``arrays['forces']``) and
    converted from ``units`` to eV. Without it, structures are stored unlabelled.
    """
    if isinstance(frames, FrameBatch):
        batch, skipped = frames, 0
    else:
        from ..io.atoms import atoms_to_batch

        batch, skipped = atoms_to_batch(
            frames, level, units=units, energy_key=energy_key, forces_key=forces_key,
            dipole_key=dipole_key, charges_key=charges_key, skip_missing=skip_missing,
            source=source)
    return ingest_batch(reg, batch, frames_skipped=skipped, batch_size=batch_size,
                             on_progress=on_progress, params={"level": level,
                                                               "units": units,
                                                               "source": source})


def ingest_batch(reg, batch: FrameBatch, *, batch_size: int = 20000,
                 on_progress: Progress | None = None, params: dict | None = None,
                 inputs: Iterable[dict] = (), frames_skipped: int = 0,
                 kind: str = "ingest") -> IngestSummary:
    """Validate, hash and write a columnar batch; one run in provenance."""
    t0 = time.perf_counter()
    batch.validate()
    batch.labels = {canonical_name(k): v for k, v in batch.labels.items()}
    # One pause from the plan to the last write: re-enabling the collector in between
    # made it run a full collection over everything the plan had just allocated.
    with gc_paused():
        # The compositions are created on another connection while the input is hashed,
        # and committed only once the plan found the input good.
        with PendingCompositions(reg.engine, input_compositions(batch)) as pending:
            plan = plan_batch(batch, pending.comps)
            pending.commit()
        level_ids = {lv: ensure_level(reg, lv)["id"] for lv in batch.labels}
        with run(reg, kind, params) as handle:
            for item in inputs:
                handle.consumed(**item)
            for lv, lid in level_ids.items():
                handle.consumed("level", lid, ref=lv)
            summary = IngestSummary(frames_read=len(batch), frames_skipped=frames_skipped,
                                    duplicates_in_input=plan.duplicates_in_input,
                                    run_id=handle.id)
            totals = WriteCounts()
            n = len(plan)
            blob = bytes if reg.dialect == "postgresql" else bytearray  # see prepare_part
            tasks = [partial(prepare_part, batch, plan, lo, min(lo + batch_size, n), blob)
                     for lo in range(0, n, batch_size)]
            try:
                write_parts(reg, tasks, n, level_ids, handle, totals, on_progress)
            finally:  # what was committed is recorded, also when the ingest fails
                summary.add(totals)
                summary.seconds = round(time.perf_counter() - t0, 4)
                handle.result = summary.run_result()
    return summary



def write_parts(reg, tasks: list[Callable[[], PreparedBatch]], total: int,
                level_ids: dict[str, int], handle: RunHandle, totals: WriteCounts,
                on_progress: Progress | None) -> None:
    """Make each part (``tasks``, in order) and write it, one transaction each; ``totals``
    adds up what was committed, also when a later part fails.

    A helper thread makes the next part while the current one is written. On PostgreSQL two
    parts are written at once on two connections (the server then uses two cores); parts
    hold disjoint structures, so they never wait on each other's rows. On SQLite (one writer
    at a time) the main thread writes. ``on_progress(done, total)`` follows each commit."""
    if not tasks:
        return
    parallel = _PG_WRITERS if reg.dialect == "postgresql" else 0
    done = 0
    inflight: deque = deque()

    def collect():
        # The oldest write leaves the in-flight list only once its result is in hand, so an
        # interrupt while waiting on it still counts it below (it commits regardless).
        nonlocal done
        counts, size = inflight[0].result()
        inflight.popleft()
        totals.add(counts)
        done += size
        if on_progress:
            on_progress(done, total)

    def write(part):
        return _write_part(reg, part, level_ids, handle), len(part)

    with ThreadPoolExecutor(1, thread_name_prefix="nnp-prepare") as prep, \
            ThreadPoolExecutor(max(parallel, 1), thread_name_prefix="nnp-write") as io:
        try:
            ahead = prep.submit(tasks[0])
            for k in range(len(tasks)):
                part = ahead.result()
                if k + 1 < len(tasks):  # make the next part while this one is written
                    ahead = prep.submit(tasks[k + 1])
                if not parallel:
                    counts, size = write(part)
                    totals.add(counts)
                    done += size
                    if on_progress:
                        on_progress(done, total)
                    continue
                inflight.append(io.submit(write, part))
                if len(inflight) >= parallel:
                    collect()
            while inflight:
                collect()
        finally:  # on an error, count what the other writers committed
            for fut in inflight:
                if fut.exception() is None:
                    totals.add(fut.result()[0])


def _write_part(reg, part, level_ids, handle: RunHandle) -> WriteCounts:
    writer = WRITERS[reg.dialect]
    for attempt in range(_RETRIES):
        try:
            with reg.engine.begin() as conn:
                return writer(conn, part, level_ids, handle.id, utcnow())
        except DBAPIError as exc:  # deadlock / serialization failure: retry the batch
            code = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == _RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
