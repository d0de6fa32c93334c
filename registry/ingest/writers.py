"""Backend fast paths for writing a prepared batch in the caller's transaction.

Both backends share one contract: insert the batch's new structures (+ elements), map every
structure to its id, insert labels whose (structure, level) has no ``ok`` label yet, and count
labels that already exist with equal or conflicting values. SQLite holds the write lock for
the whole transaction (BEGIN IMMEDIATE), so it checks then inserts with executemany.
PostgreSQL checks which rows exist, then binary-COPYs the new rows (built by
:mod:`registry.store.pgcopy`) straight into the tables in hash order; if a concurrent ingest
committed one of the same rows first, it rolls back to a savepoint and merges through staging
tables with ``INSERT ... ON CONFLICT DO NOTHING``, so overlapping ingests never duplicate or
deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from ..chem.arrays import take
from ..chem.identity import HASH_VERSION
from ..store import pgcopy
from .prepare import PreparedBatch


@dataclass
class WriteCounts:
    structures_new: int = 0
    structures_existing: int = 0
    labels_new: int = 0
    labels_existing: int = 0
    labels_conflicting: int = 0
    conflicts: list[dict] = field(default_factory=list)

    def add(self, other: WriteCounts) -> None:
        for k in ("structures_new", "structures_existing", "labels_new", "labels_existing",
                  "labels_conflicting"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.conflicts.extend(other.conflicts[: max(0, 100 - len(self.conflicts))])


def _sqlite_insert(raw, table: str, consts: dict[str, int], cols: list[tuple[str, list]]):
    """``executemany`` INSERT of ``cols`` (name, values per row) into ``table``.

    Integer constants and columns NULL in every row are SQL literals, not parameters: the
    driver adapts every bound None (and bytes) through its adapter protocol, which cost about
    a third of a microsecond per value, more than the insert of the value itself."""
    names, marks, data = [], [], []
    for name, value in consts.items():
        names.append(name)
        marks.append(str(int(value)))
    for name, values in cols:
        names.append(name)
        if values and values[0] is None and values.count(None) == len(values):
            marks.append("NULL")
        else:
            marks.append("?")
            data.append(values)
    raw.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(marks)})",
                    zip(*data, strict=True))


def _structure_cols(pb: PreparedBatch, idx: np.ndarray, ids: np.ndarray, now):
    """Columns of the SQLite structures insert (structures ``idx``)."""
    r = idx.tolist()
    identity = r == list(range(len(pb)))

    def pick(col):
        return col if identity else take(col, r)

    def ints(arr):
        return np.asarray(arr)[idx].tolist()

    return [("id", ids[idx].tolist()), ("hash", pick(pb.hashes)), ("n_atoms", ints(pb.n_atoms)),
            ("numbers", pick(pb.numbers)),
            ("positions", pick(pb.positions)), ("cell", pick(pb.cells)), ("pbc", ints(pb.pbc)),
            ("nperiodic", ints(pb.nperiodic)), ("charge", ints(pb.charge)),
            ("multiplicity", ints(pb.multiplicity)),
            ("composition_id", ints(pb.composition_id)), ("source", pick(pb.sources)),
            ("info", pick(pb.infos)),
            ("created_at", [now] * len(r))]


_S_COLS = ("hash, hash_version, n_atoms, numbers, positions, cell, pbc, nperiodic, charge, "
           "multiplicity, composition_id, source, info, run_id, created_at")
_L_COLS = ("structure_id, level_id, composition_id, hash, energy, forces, dipole, charges, "
           "stress, max_force, status, source_unit, run_id, created_at")


def _by_hash(pb: PreparedBatch, idx: np.ndarray) -> np.ndarray:
    """``idx`` ordered by structure hash (index-friendly insertion, one lock order); parts
    come in hash order already (see ``plan_batch``), which this sort checks in linear time."""
    h = pb.hashes if len(idx) == len(pb) else [pb.hashes[i] for i in idx.tolist()]
    if h == sorted(h):  # the usual case, checked in linear time
        return idx
    return idx[np.asarray(sorted(range(len(h)), key=h.__getitem__), dtype=np.int64)]


def _conflict(pb, lr, k):
    return {"structure": pb.hashes[int(lr.index[k])], "level": lr.level}


def _new_labels(pb, lr, stored: list[str | None], out: WriteCounts) -> list[int]:
    """Indices of ``lr``'s labels to insert. ``stored[k]`` is the hash of the ``ok`` label
    already stored for label k's (structure, level), or None; an equal hash counts as
    existing, a different one as a conflict (never written). Non-``ok`` labels always go in."""
    keep = []
    for k, prev in enumerate(stored):
        if prev is None or lr.status != "ok":
            keep.append(k)
        elif prev == lr.hashes[k]:
            out.labels_existing += 1
        else:
            out.labels_conflicting += 1
            if len(out.conflicts) < 100:
                out.conflicts.append(_conflict(pb, lr, k))
    return keep


# --------------------------------------------------------------------------- SQLite
def write_sqlite(conn, pb: PreparedBatch, level_ids: dict[str, int], run_id: int,
                 now: datetime) -> WriteCounts:
    """Write ``pb`` on a SQLite connection inside BEGIN IMMEDIATE."""
    out = WriteCounts()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    existing: dict[str, int] = {}
    for lo in range(0, len(pb), 10000):
        chunk = pb.hashes[lo: lo + 10000]
        marks = ",".join("?" * len(chunk))
        existing.update(conn.exec_driver_sql(
            f"SELECT hash, id FROM structures WHERE hash IN ({marks})", tuple(chunk)).all())
    ids = np.zeros(len(pb), dtype=np.int64)
    is_new = np.ones(len(pb), dtype=bool)
    if existing:
        for i, h in enumerate(pb.hashes):
            sid = existing.get(h)
            if sid is not None:
                ids[i], is_new[i] = sid, False
    new_idx = np.flatnonzero(is_new)
    start = conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM structures").scalar()
    # Ids ascend in insertion (hash) order, so every B-tree of the part is appended to.
    rows = _by_hash(pb, new_idx)
    ids[rows] = start + 1 + np.arange(len(rows))
    raw = conn.connection.driver_connection.cursor()  # same connection and transaction
    if len(new_idx):
        _sqlite_insert(raw, "structures", {"hash_version": HASH_VERSION, "run_id": run_id},
                       _structure_cols(pb, rows, ids, stamp))
    out.structures_new = len(new_idx)
    out.structures_existing = len(pb) - len(new_idx)
    for lr in pb.labels:
        level_id = level_ids[lr.level]
        sids = ids[lr.index]
        old = {}
        check = sids[~is_new[lr.index]].tolist()
        for lo in range(0, len(check), 10000):
            chunk = check[lo: lo + 10000]
            old.update(conn.exec_driver_sql(
                "SELECT structure_id, hash FROM labels WHERE status = 'ok' AND level_id = ? "
                f"AND structure_id IN ({','.join('?' * len(chunk))})",
                (level_id, *chunk)).all())
        keep = (np.asarray(_new_labels(pb, lr, [old.get(sid) for sid in sids.tolist()], out),
                           dtype=np.int64) if old else np.arange(len(sids)))
        keep = keep[np.argsort(sids[keep], kind="stable")]  # index (level, structure) order
        m = len(keep)
        if np.array_equal(keep, np.arange(len(sids))):
            cols = (lr.hashes, lr.energy, lr.forces, lr.dipole, lr.charges, lr.stress,
                    lr.max_force)
        else:
            k_list = keep.tolist()
            cols = tuple(take(col, k_list) for col in (
                lr.hashes, lr.energy, lr.forces, lr.dipole, lr.charges, lr.stress,
                lr.max_force))
        if m:
            names = ("hash", "energy", "forces", "dipole", "charges", "stress", "max_force")
            _sqlite_insert(raw, "labels", {"level_id": level_id, "run_id": run_id}, [
                ("structure_id", sids[keep].tolist()),
                ("composition_id", pb.composition_id[lr.index[keep]].tolist()),
                *zip(names, cols, strict=True),
                ("status", [lr.status] * m), ("source_unit", [lr.source_unit] * m),
                ("created_at", [stamp] * m)])
        out.labels_new += m
    return out


# ----------------------------------------------------------------------- PostgreSQL
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS nnp_stage_s (
  idx int4, hash text, hash_version int2, n_atoms int4, numbers bytea, positions bytea,
  cell bytea, pbc int2, nperiodic int2, charge int2, multiplicity int2, composition_id int8,
  source text, info json) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS nnp_stage_l (
  sidx int4, level_id int8, composition_id int8, hash text, energy float8, forces bytea,
  dipole bytea, charges bytea, stress bytea, max_force float8, status text, source_unit text)
  ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS nnp_map (idx int4 PRIMARY KEY, id int8, run_id int8)
  ON COMMIT DELETE ROWS;
"""
_S_TYPES = ["int4", "text", "int2", "int4", "bytea", "bytea", "bytea", "int2", "int2", "int2",
            "int2", "int8", "text", "json"]
_L_TYPES = ["int4", "int8", "int8", "text", "float8", "bytea", "bytea", "bytea", "bytea", "float8",
            "text", "text"]


def _write_postgres_merge(cur, pb: PreparedBatch, level_ids: dict[str, int], run_id: int,
                          now: datetime) -> WriteCounts:
    """Staged path: COPY into temp tables, INSERT ... ON CONFLICT DO NOTHING in hash order.

    Never fails on rows another transaction inserts concurrently (it waits, then skips)."""
    out = WriteCounts()
    cur.execute(_STAGE)
    with cur.copy("COPY nnp_stage_s FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(_S_TYPES)
        for i in range(len(pb)):
            cp.write_row((i, pb.hashes[i], HASH_VERSION, int(pb.n_atoms[i]), pb.numbers[i],
                          pb.positions[i], pb.cells[i], int(pb.pbc[i]), int(pb.nperiodic[i]),
                          int(pb.charge[i]), int(pb.multiplicity[i]),
                          int(pb.composition_id[i]), pb.sources[i], pb.infos[i]))
    cur.execute(
        f"""INSERT INTO structures ({_S_COLS})
            SELECT hash, hash_version, n_atoms, numbers, positions, cell, pbc, nperiodic,
                   charge, multiplicity, composition_id, source, info, %(run)s, %(now)s
            FROM nnp_stage_s ORDER BY hash
            ON CONFLICT (hash) DO NOTHING""",
        {"run": run_id, "now": now})
    # the rows this statement inserted (not "rows of this run": the shards of a parallel
    # ingest write as one run, concurrently)
    out.structures_new = cur.rowcount
    cur.execute("INSERT INTO nnp_map SELECT st.idx, s.id, s.run_id FROM nnp_stage_s st "
                "JOIN structures s ON s.hash = st.hash")
    out.structures_existing = len(pb) - out.structures_new
    if pb.labels:
        with cur.copy("COPY nnp_stage_l FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_L_TYPES)
            for lr in pb.labels:
                lid = level_ids[lr.level]
                for k, idx in enumerate(lr.index.tolist()):
                    cp.write_row((idx, lid, int(pb.composition_id[idx]), lr.hashes[k],
                                  lr.energy[k], lr.forces[k],
                                  lr.dipole[k], lr.charges[k], lr.stress[k],
                                  lr.max_force[k], lr.status, lr.source_unit))
        cur.execute(
            f"""INSERT INTO labels ({_L_COLS})
                SELECT m.id, l.level_id, l.composition_id, l.hash, l.energy, l.forces,
                       l.dipole, l.charges, l.stress, l.max_force, l.status, l.source_unit,
                       %(run)s, %(now)s
                FROM nnp_stage_l l JOIN nnp_map m ON m.idx = l.sidx
                ORDER BY l.level_id, m.id
                ON CONFLICT (structure_id, level_id) WHERE status = 'ok' DO NOTHING""",
            {"run": run_id, "now": now})
        out.labels_new = cur.rowcount
        bad = cur.execute(
            """SELECT l.sidx, l.level_id FROM nnp_stage_l l JOIN nnp_map m ON m.idx = l.sidx
               JOIN labels x ON x.structure_id = m.id AND x.level_id = l.level_id
                            AND x.status = 'ok'
               WHERE x.hash <> l.hash AND l.status = 'ok'""").fetchall()
        names = {v: k for k, v in level_ids.items()}
        out.labels_conflicting = len(bad)
        out.conflicts = [{"structure": pb.hashes[i], "level": names[lv]} for i, lv in bad[:100]]
        total = sum(len(lr.index) for lr in pb.labels)
        out.labels_existing = total - out.labels_new - out.labels_conflicting
    return out



_WORK_MEM = "64MB"


def write_postgres(conn, pb: PreparedBatch, level_ids: dict[str, int], run_id: int,
                   now: datetime) -> WriteCounts:
    """Write ``pb`` on a PostgreSQL (psycopg 3) connection inside its transaction.

    Fast path: look up which hashes exist, reserve ids, binary-COPY the new rows straight into
    the tables (rows in hash / (structure, level) order, so concurrent writers queue instead
    of deadlocking). If a concurrent transaction committed one of the same rows first, the
    unique index refuses the COPY: roll back to a savepoint and take the staged path."""
    import psycopg

    cur = conn.connection.driver_connection.cursor()
    # Transaction-local: no JIT for the small statements; and room for the labels reference
    # check's transition table (every new label row of the part) in memory, where the
    # default 4 MB spills it to a temporary file.
    cur.execute("SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true)",
                (_WORK_MEM,))
    cur.execute("SAVEPOINT nnp_fast")
    try:
        out = _write_postgres_copy(cur, pb, level_ids, run_id, now)
    except psycopg.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT nnp_fast")
        return _write_postgres_merge(cur, pb, level_ids, run_id, now)
    cur.execute("RELEASE SAVEPOINT nnp_fast")
    return out


def _write_postgres_copy(cur, pb: PreparedBatch, level_ids: dict[str, int], run_id: int,
                         now: datetime) -> WriteCounts:
    out = WriteCounts()
    n = len(pb)
    ids = np.zeros(n, dtype=np.int64)
    is_new = np.ones(n, dtype=bool)
    if n:
        # The hashes travel as one comma-separated text (hex digests hold no commas), not as
        # an array parameter dumped element by element.
        # Probe the hash index (a part's hashes are sorted, so the probes walk it in order);
        # without statistics, as during a bulk load, the planner would hash the list and
        # scan the whole table for every part.
        cur.execute("SET LOCAL enable_seqscan = off")
        found = cur.execute(
            "SELECT hash, id FROM structures WHERE hash = ANY(string_to_array(%s, ','))",
            (",".join(pb.hashes),)).fetchall()
        cur.execute("SET LOCAL enable_seqscan = on")
        if found:  # (a position map only where some exist: a fresh load has none)
            pos = {h: i for i, h in enumerate(pb.hashes)}
            for h, sid in found:
                ids[pos[h]], is_new[pos[h]] = sid, False
    new_idx = np.flatnonzero(is_new)
    if len(new_idx):
        # the sequence is looked up once (OFFSET 0 keeps the subquery from being inlined
        # into a per-row catalog lookup, which cost more than the nextval itself); the ids
        # come back packed as big-endian int8 in one bytea
        got = cur.execute("SELECT string_agg(int8send(nextval(q.seq)), ''::bytea) FROM (SELECT "
                          "pg_get_serial_sequence('structures', 'id')::regclass AS seq "
                          "OFFSET 0) AS q CROSS JOIN generate_series(1, %s)",
                          (len(new_idx),)).fetchone()[0]
        rows = _by_hash(pb, new_idx)  # ids ascend in insertion (hash) order
        ids[rows] = np.sort(np.frombuffer(got, dtype=">i8").astype(np.int64))
        pgcopy.copy_into(cur, "structures", pgcopy.structure_stream(pb, rows, ids, run_id, now))
    out.structures_new = len(new_idx)
    out.structures_existing = n - len(new_idx)

    old_ids = ids[~is_new].tolist()
    old: dict[tuple[int, int], str] = {}
    if old_ids and pb.labels:
        old = {(sid, lid): h for sid, lid, h in cur.execute(
            "SELECT structure_id, level_id, hash FROM labels WHERE status = 'ok' "
            "AND structure_id = ANY(%s) AND level_id = ANY(%s)",
            (old_ids, list(level_ids.values())))}
    picks = []
    for lr in pb.labels:
        lid = level_ids[lr.level]
        if old:
            keep = np.asarray(_new_labels(pb, lr, [old.get((sid, lid)) for sid in
                                                   ids[lr.index].tolist()], out),
                              dtype=np.int64)
        else:  # no stored labels for these structures: all are new
            keep = np.arange(len(lr.index))
        if len(keep):
            picks.append((lr, lid, keep, ids[lr.index], pb.composition_id[lr.index]))
        out.labels_new += len(keep)
    if picks:
        pgcopy.copy_into(cur, "labels", pgcopy.labels_stream(picks, run_id, now))
    return out


WRITERS = {"sqlite": write_sqlite, "postgresql": write_postgres}
