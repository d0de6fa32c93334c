"""Reading a dataset version's rows out of the database, for :mod:`.materialize`.

Members are read in ranges of structure ids, several ranges at once on their own connections
(reader threads); each range is one aggregate row per query, parsed by numpy. SQLite versions
of one level are read in two passes straight into the buckets (:func:`read_buckets`); the
others are read into flat arrays (:func:`read_version`), then bucketed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..store.engine import SQLITE_CACHE
from .buckets import assemble, bucketize, layout, new_blocks, records, rows3

_SQLITE_READ_CACHE = -8192  # KiB of page cache while a version is read

# One aggregate row per chunk of members: every per-row value is concatenated server-side
# (group_concat / string_agg) so a whole version crosses the driver as a few big values, and
# numpy parses them without a Python loop per structure. All aggregates of one row see the rows
# in the same order; chunks and levels are aligned by the structure ids they carry.
# Structures per aggregate row: small ranges, each parsed into numpy arrays and freed before
# the next, so the driver's and the engine's buffers (a few MB) are reused warm; one aggregate
# of a whole large version spends about half its time faulting in fresh pages. On PostgreSQL
# each range is three index walks (members by (version, structure), labels and structures by
# id); hash joins would scan both tables for every range.
_CHUNK_ROWS = {"postgresql": 8_192, "sqlite": 4_096}
_ID_MIN, _ID_MAX = -(2**63), 2**63 - 1
_JOIN = ("FROM dataset_members m JOIN labels l ON l.id = m.label_id {s}"
         "WHERE m.version_id = ? AND l.level_id = ? AND m.structure_id BETWEEN ? AND ?")
_S = "JOIN structures s ON s.id = m.structure_id "
# SQLite: blobs concatenated (CAST keeps the bytes); integers as comma-separated decimal
# (SQLite's integer-to-text, much cheaper per row than printf), the small ones packed into
# one (see _unpack); energies as 18 significant digits (exact for float64), 'nan' where NULL.
_SQLITE_PACKED = ("((s.n_atoms * 8 + s.pbc) * 4 + m.split) * 4 + (l.forces IS NOT NULL) "
                  "+ 2 * (s.cell IS NOT NULL)")
_SQLITE_ENERGY = ("group_concat(CASE WHEN l.energy IS NULL THEN 'nan' "
                  "ELSE printf('%!.17e', l.energy) END, ',')")
# Full hashes: their text is appended as stored, where a per-row substr allocates.
_SQLITE_STRUCT = (
    "SELECT count(*), CAST(group_concat(s.hash, '') AS BLOB), group_concat(m.structure_id), "
    f"group_concat({_SQLITE_PACKED}), {_SQLITE_ENERGY}, CAST(group_concat(s.numbers, '') AS BLOB), "
    "CAST(group_concat(s.positions, '') AS BLOB), CAST(group_concat(s.cell, '') AS BLOB), "
    "CAST(group_concat(l.forces, '') AS BLOB) " + _JOIN.format(s=_S))
# The two passes of _read_into_buckets (one level). First the structures of the members (no
# labels: every member of a one-level version is a label of that level): full hashes, ids, and
# n_atoms, pbc, split and "has a cell" packed in one integer; then the atom arrays with the
# labels' energies, and ids that carry "has forces" in their lowest bit, so the second pass
# does not depend on the first one's row order.
_SQLITE_META = (
    "SELECT count(*), CAST(group_concat(s.hash, '') AS BLOB), group_concat(m.structure_id), "
    "group_concat(((s.n_atoms * 8 + s.pbc) * 4 + m.split) * 2 + (s.cell IS NOT NULL)), "
    "CAST(group_concat(s.cell, '') AS BLOB) FROM dataset_members m "
    f"{_S}WHERE m.version_id = ? AND m.structure_id BETWEEN ? AND ?")
_SQLITE_ATOMS = (
    "SELECT count(*), group_concat(m.structure_id * 2 + (l.forces IS NOT NULL)), "
    f"{_SQLITE_ENERGY}, CAST(group_concat(s.numbers, '') AS BLOB), "
    "CAST(group_concat(s.positions, '') AS BLOB), CAST(group_concat(l.forces, '') AS BLOB) "
    + _JOIN.format(s=_S))
_SQLITE_LABEL = (
    "SELECT count(*), group_concat(m.structure_id), group_concat(l.forces IS NOT NULL), "
    f"{_SQLITE_ENERGY}, CAST(group_concat(l.forces, '') AS BLOB) " + _JOIN.format(s=""))
# PostgreSQL: the binary send functions give big-endian fixed-width fields.
_PG_STRUCT = (
    "SELECT count(*), string_agg(decode(substr(s.hash, 1, 16), 'hex'), ''), "
    "string_agg(int8send(m.structure_id) || int4send(s.n_atoms) || int2send(s.pbc) "
    "|| int2send(m.split) || int2send(((l.forces IS NOT NULL)::int "
    "+ 2 * (s.cell IS NOT NULL)::int)::int2) || float8send(coalesce(l.energy, 'NaN')), ''), "
    "string_agg(s.numbers, ''), string_agg(s.positions, ''), string_agg(s.cell, ''), "
    "string_agg(l.forces, '') " + _JOIN.format(s=_S))
_PG_LABEL = (
    "SELECT count(*), string_agg(int8send(m.structure_id) || int2send((l.forces IS NOT NULL)"
    "::int::int2) || float8send(coalesce(l.energy, 'NaN')), ''), string_agg(l.forces, '') "
    + _JOIN.format(s=""))
# Transaction-local settings of a PostgreSQL read, applied in one round trip.
_PG_SETTINGS = ("SELECT set_config('jit', 'off', true), "
                "set_config('max_parallel_workers_per_gather', '0', true), "
                "set_config('enable_hashjoin', 'off', true), "
                "set_config('enable_mergejoin', 'off', true)")
_PG_STRUCT_ROW = np.dtype([("sid", ">i8"), ("n", ">i4"), ("pbc", ">i2"), ("split", ">i2"),
                           ("flags", ">i2"), ("energy", ">f8")])
_PG_LABEL_ROW = np.dtype([("sid", ">i8"), ("flags", ">i2"), ("energy", ">f8")])


def _ints_text(text: str | None, n: int) -> np.ndarray:
    """int64 column from ``n`` comma-separated decimal integers."""
    out = np.fromstring(text, dtype=np.int64, sep=",") if n else np.zeros(0, dtype=np.int64)
    if len(out) != n:
        raise RuntimeError(f"materialize: parsed {len(out)} integers, expected {n}")
    return out


def _unpack(packed: np.ndarray) -> tuple[np.ndarray, ...]:
    """n_atoms, pbc bits, split, flags from the integers of ``_SQLITE_PACKED``."""
    return packed >> 7, (packed >> 4) & 7, (packed >> 2) & 3, packed & 3


def _hex_key(buf: bytes, n: int, width: int = 16) -> np.ndarray:
    """uint64 of the first 16 hex digits of each of ``n`` hashes of ``width`` digits."""
    v = np.frombuffer(buf, dtype=np.uint8).reshape(n, width)[:, :16].astype(np.uint64)
    v = np.where(v >= 97, v - 87, v - 48)
    return (v << (4 * np.arange(15, -1, -1, dtype=np.uint64))).sum(axis=1, dtype=np.uint64)


def _blob(v) -> bytes:
    return b"" if v is None else bytes(v) if not isinstance(v, bytes) else v


def _floats_text(text: str | None, n: int) -> np.ndarray:
    out = np.fromstring(text, dtype=np.float64, sep=",") if n else np.zeros(0)
    if len(out) != n:
        raise RuntimeError(f"materialize: parsed {len(out)} energies, expected {n}")
    return out


class _Reader:
    """Aggregate queries of one version on one connection (SQLite or PostgreSQL)."""

    def __init__(self, conn, dialect: str, version_id: int):
        self.raw = conn.connection.driver_connection
        self.pg = dialect == "postgresql"
        self.version_id = version_id

    def _one(self, sql: str, params: tuple) -> tuple:
        return self._query(sql, params)[0]

    def _query(self, sql: str, params: tuple) -> list:
        """All rows of ``sql`` (``?`` placeholders; binary results on PostgreSQL)."""
        if self.pg:
            with self.raw.transaction(), self.raw.cursor(binary=True) as cur:
                # One backend per range (the reader threads are the parallelism), joined
                # by index lookups (see _CHUNK_ROWS).
                cur.execute(_PG_SETTINGS)
                cur.execute(sql.replace("%", "%%").replace("?", "%s"), params, binary=True)
                return cur.fetchall()
        cur = self.raw.cursor()
        try:
            # A small page cache for the one pass over the version: pages are reused instead
            # of growing the connection's 256 MB cache, whose fresh memory a first read in a
            # new process would fault in.
            cur.execute(f"PRAGMA cache_size = {_SQLITE_READ_CACHE}")
            return cur.execute(sql, params).fetchall()
        finally:
            cur.execute(f"PRAGMA cache_size = {SQLITE_CACHE}")
            cur.close()

    def cuts(self, pieces: int, n_structures: int) -> list[int]:
        """Structure ids splitting the version's structures into ``pieces`` ranges.

        Where the version's ids are dense (their span at most ``_DENSE`` times the number of
        structures, as for a version of a whole load), the id span is cut into equal slices
        from two index probes (min and max); ranges then hold about equally many structures,
        some possibly none. Otherwise the cuts are exact, from one packed list of the members'
        structure ids read off the version's index."""
        lo, hi = self._one("SELECT min(structure_id), max(structure_id) FROM dataset_members "
                           "WHERE version_id = ?", (self.version_id,))
        if lo is None:
            return []
        span = hi - lo + 1
        if span <= _DENSE * n_structures:
            step = max(-(-span // pieces), 1)
            return list(range(lo + step, hi + 1, step))
        if self.pg:
            sql = "SELECT string_agg(int8send(structure_id), '') "
        else:
            sql = "SELECT group_concat(structure_id) "
        (packed,) = self._one(sql + "FROM dataset_members WHERE version_id = ?",
                              (self.version_id,))
        sids = (np.frombuffer(_blob(packed), dtype=">i8") if self.pg
                else np.fromstring(packed, dtype=np.int64, sep=","))
        sids = np.unique(sids)  # sorted; one per structure whatever the number of levels
        step = max(-(-len(sids) // pieces), 1)
        return sids[step::step].tolist()

    def chunk(self, level_id: int, lo: int, hi: int, structures: bool,
              meta: bool = False) -> dict:
        """Columns of the members at ``level_id`` with structure id in [lo, hi] (``meta``:
        SQLite, the structures' values of a one-level version, ``level_id`` unused)."""
        if self.pg:
            sql = _PG_STRUCT if structures else _PG_LABEL
        else:
            sql = (_SQLITE_META if meta else _SQLITE_STRUCT) if structures else _SQLITE_LABEL
        rows = self._halving(sql, lambda a, b: (self.version_id, a, b) if meta
                             else (self.version_id, level_id, a, b), lo, hi)
        parts = [self._parse(row, structures, meta) for row in rows]
        return parts[0] if len(parts) == 1 else {
            k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def atoms(self, level_id: int, lo: int, hi: int) -> list[tuple]:
        """SQLite: (structure ids, has forces, energies, numbers, positions, forces present)
        of the members at ``level_id`` with structure id in [lo, hi], the arrays as numpy
        views of the driver's values; one tuple, or several where the range was halved."""
        out = []
        for row in self._halving(_SQLITE_ATOMS, lambda a, b: (self.version_id, level_id, a, b),
                                 lo, hi):
            n = int(row[0])
            tagged = _ints_text(row[1], n)
            out.append((tagged >> 1, (tagged & 1) > 0, _floats_text(row[2], n),
                        np.frombuffer(_blob(row[3]), dtype=np.uint8),
                        np.frombuffer(_blob(row[4]), dtype="<f8").reshape(-1, 3),
                        np.frombuffer(_blob(row[5]), dtype="<f8").reshape(-1, 3)))
        return out

    def _halving(self, sql: str, params, lo: int, hi: int) -> list[tuple]:
        """The aggregate row of ``sql`` over structure ids [lo, hi] (``params(lo, hi)``), or,
        where a value would exceed the database's size limit, the rows of the two halves
        (recursively), in id order."""
        try:
            return [self._one(sql, params(lo, hi))]
        except Exception as exc:
            if not _too_big(exc) or lo >= hi:
                raise
        mid = lo + (hi - lo) // 2
        return self._halving(sql, params, lo, mid) + self._halving(sql, params, mid + 1, hi)

    def _parse(self, row: tuple, structures: bool, meta: bool = False) -> dict:
        n = int(row[0])
        out: dict[str, np.ndarray] = {}
        if self.pg and structures:
            rec = np.frombuffer(_blob(row[2]), dtype=_PG_STRUCT_ROW)
            out["key"] = np.frombuffer(_blob(row[1]), dtype=">u8").astype(np.uint64)
            out["sid"], out["n_atoms"] = rec["sid"].astype(np.int64), rec["n"].astype(np.int32)
            out["pbc"], out["split"] = rec["pbc"].astype(np.int64), rec["split"].astype(np.int8)
            out["flags"], out["energy"] = rec["flags"].astype(np.int64), rec["energy"].astype("<f8")
            blobs = row[3:]
        elif self.pg:
            rec = np.frombuffer(_blob(row[1]), dtype=_PG_LABEL_ROW)
            out["sid"], out["flags"] = rec["sid"].astype(np.int64), rec["flags"].astype(np.int64)
            out["energy"] = rec["energy"].astype("<f8")
            blobs = row[2:]
        elif meta:
            hashes = _blob(row[1])
            out["key"], out["hash"] = _hex_key(hashes, n, 64), np.frombuffer(hashes, "S64")
            packed = _ints_text(row[3], n)
            out.update(sid=_ints_text(row[2], n), n_atoms=(packed >> 6).astype(np.int32),
                       pbc=(packed >> 3) & 7, split=((packed >> 1) & 3).astype(np.int8),
                       flags=(packed & 1) * 2)
            blobs = row[4:]
        elif structures:
            hashes = _blob(row[1])
            out["key"], out["hash"] = _hex_key(hashes, n, 64), np.frombuffer(hashes, "S64")
            nat, pbc, split, flags = _unpack(_ints_text(row[3], n))
            out.update(sid=_ints_text(row[2], n), n_atoms=nat.astype(np.int32), pbc=pbc,
                       split=split.astype(np.int8), flags=flags)
            out["energy"] = _floats_text(row[4], n)
            blobs = row[5:]
        else:
            out["sid"], out["flags"] = _ints_text(row[1], n), _ints_text(row[2], n)
            out["energy"] = _floats_text(row[3], n)
            blobs = row[4:]
        names = (("cell",) if meta else ("numbers", "positions", "cell", "forces")
                 ) if structures else ("forces",)
        for name, v in zip(names, blobs, strict=True):
            a = np.frombuffer(_blob(v), dtype=np.uint8 if name == "numbers" else "<f8")
            # SQLite: own the bytes, so the driver's buffer is freed (and reused) now
            out[name] = a if self.pg else a.copy()
        return out


def _too_big(exc: Exception) -> bool:
    """A value over the database's size limit (the range is then read in halves)."""
    return "too big" in str(exc) or "memory" in str(exc).lower()


def _sqlite_exact_floats() -> bool:
    """SQLite prints doubles exactly from 3.43 on, or where long double is wider."""
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 43) or np.finfo(np.longdouble).nmant >= 63


def _expand_forces(packed, has: np.ndarray, n_atoms: np.ndarray):
    """(N_atoms, 3) forces from the concatenation of the present ones; NaN where absent.
    ``packed`` may be a list of the ranges' arrays (kept a list when all are present)."""
    if has.all():
        return rows3(packed)
    if isinstance(packed, list):
        packed = np.concatenate(packed)
    out = np.full((int(n_atoms.sum()), 3), np.nan)
    out[np.repeat(has, n_atoms)] = packed.reshape(-1, 3)
    return out


# Connections reading ranges at once. PostgreSQL: each range is aggregated by its own server
# backend, so two run on two cores (a third only competes for them). SQLite works in this
# process, in the reader threads (the driver releases the GIL while SQLite runs); with three,
# two aggregate while the third parses its range, which keeps two cores busy.
_READERS = {"postgresql": 2, "sqlite": 3}
_PARALLEL_MIN = 20_000  # structures below which one range on one connection is read
_DENSE = 2  # id span per structure up to which ranges are equal slices of the span


def _ranges(connect, dialect: str, version_id: int,
            n_structures: int) -> list[tuple[int, int]]:
    """Structure-id ranges of at most ``_CHUNK_ROWS`` structures, and at least one per reader
    (``_READERS``) for versions of ``_PARALLEL_MIN`` structures or more."""
    pieces = max(-(-n_structures // _CHUNK_ROWS[dialect]),
                 _READERS[dialect] if n_structures >= _PARALLEL_MIN else 1)
    cuts = []
    if pieces > 1:
        with connect() as conn:
            cuts = _Reader(conn, dialect, version_id).cuts(pieces, n_structures)
    return list(zip([_ID_MIN, *cuts], [c - 1 for c in cuts] + [_ID_MAX], strict=True))


def _read_ranges(connect, dialect: str, version_id: int, ranges, jobs) -> list:
    """Run ``jobs(reader, lo, hi)`` over ``ranges``, ``_READERS`` at once, each on its own
    connection (in a thread; the drivers release the GIL while the database works). Returns
    the results in range (structure id) order."""

    def run(lo_hi):
        with connect() as c:
            return jobs(_Reader(c, dialect, version_id), *lo_hi)

    if len(ranges) == 1:
        return [run(ranges[0])]
    readers = min(_READERS[dialect], len(ranges))
    with ThreadPoolExecutor(readers, thread_name_prefix="nnp-read") as ex:
        return list(ex.map(run, ranges))


def _concat(parts: list[dict], keep: tuple[str, ...] = ()) -> dict:
    """One dict of the ranges' columns; the columns in ``keep`` stay lists of the ranges'
    arrays (the big atom arrays go straight into the buckets, never copied into one)."""
    return {k: [p[k] for p in parts] if k in keep
            else parts[0][k] if len(parts) == 1 else np.concatenate([p[k] for p in parts])
            for k in parts[0]}


def read_version(connect, dialect: str, version_id: int, level_ids: list[int],
                 delta: bool, n_structures: int) -> dict:
    """Flat (ragged) arrays of a version, with ``order`` putting them in structure-hash order.

    ``connect()`` opens a connection (a context manager); ranges of structure ids are read on
    several at once."""

    def jobs(rd, lo, hi):
        first = rd.chunk(level_ids[0], lo, hi, True)
        return first, [rd.chunk(lid, lo, hi, False) for lid in level_ids[1:]]

    ranges = _ranges(connect, dialect, version_id, n_structures)
    got = _read_ranges(connect, dialect, version_id, ranges, jobs)
    single = len(level_ids) == 1 and not delta
    f = _concat([g[0] for g in got], keep=("hash", "numbers", "positions", "forces") if single
                else ("hash",))
    others = [_concat([g[1][k] for g in got]) for k in range(len(level_ids) - 1)]
    n = len(f["sid"])
    if n == 0:
        return {"n": 0}
    if dialect == "sqlite" and not _sqlite_exact_floats():
        with connect() as conn:
            f["energy"] = _exact_energies(conn, version_id, level_ids[0], f["sid"])
            for lid, g in zip(level_ids[1:], others, strict=True):
                g["energy"] = _exact_energies(conn, version_id, lid, g["sid"])
    n_atoms, flags = f["n_atoms"], f["flags"]
    offsets = np.concatenate([[0], np.cumsum(n_atoms, dtype=np.int64)])
    cell, pbc = _cells_pbc(f)
    flat = {"structure_id": f["sid"], "n_atoms": n_atoms, "offsets": offsets,
            "numbers": f["numbers"], "positions": rows3(f["positions"]), "cell": cell,
            "pbc": pbc, "split": f["split"],
            "order": _hash_order(f["key"], lambda: np.concatenate(f["hash"]) if "hash" in f
                                 else _full_hashes(connect, dialect, version_id, level_ids[0],
                                                   ranges))}
    energies = [f["energy"]]
    forces = [_expand_forces(f["forces"], (flags & 1) > 0, n_atoms)]
    for g in others:
        if not np.array_equal(g["sid"], f["sid"]):  # align by structure id
            pos = np.argsort(g["sid"], kind="stable")
            where = pos[np.searchsorted(g["sid"], f["sid"], sorter=pos)]
            g_n = np.zeros(len(g["sid"]), dtype=np.int64)
            g_n[where] = n_atoms
            gf = _expand_forces(g["forces"], (g["flags"] & 1) > 0, g_n)
            g_off = np.concatenate([[0], np.cumsum(g_n)])
            atom_src = (np.repeat(g_off[where] - offsets[:-1], n_atoms)
                        + np.arange(int(offsets[-1])))
            energies.append(g["energy"][where])
            forces.append(gf[atom_src])
        else:
            energies.append(g["energy"])
            forces.append(_expand_forces(g["forces"], (g["flags"] & 1) > 0, n_atoms))
    flat["level_energy"] = np.stack(energies, axis=1)
    if delta:
        flat["energy"], flat["forces"] = energies[0] - energies[1], forces[0] - forces[1]
    else:
        flat["energy"], flat["forces"] = energies[0], forces[0]
    return flat


def _cells_pbc(f: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 3) cells (zeros where a structure has none) and (N, 3) pbc flags from the parsed
    per-structure columns (``flags`` bit 1: has a cell; ``pbc`` bits x, y, z)."""
    cell = np.zeros((len(f["sid"]), 3, 3))
    cell[(f["flags"] & 2) > 0] = f["cell"].reshape(-1, 3, 3)
    return cell, (f["pbc"][:, None] >> np.arange(3)) & 1 == 1


def _full_hashes(connect, dialect: str, version_id: int, level_id: int, ranges) -> np.ndarray:
    """The members' full structure hashes (S64), in the order the ranges read them."""

    def hashes(rd, lo, hi):
        v = rd._one(("SELECT string_agg(s.hash, '') " if rd.pg else
                     "SELECT group_concat(s.hash, '') ") + _JOIN.format(s=_S),
                    (version_id, level_id, lo, hi))[0]
        return np.frombuffer((v or "").encode(), dtype="S64")

    return np.concatenate(_read_ranges(connect, dialect, version_id, ranges, hashes))


def _hash_order(key: np.ndarray, full_hashes) -> np.ndarray:
    """Permutation into full structure-hash order (the 64-bit prefix decides but for ties,
    when ``full_hashes()`` is read)."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    if len(k) < 2 or (k[1:] != k[:-1]).all():
        return order
    return np.argsort(full_hashes(), kind="stable")


def _exact_energies(conn, version_id: int, level_id: int, sid: np.ndarray) -> np.ndarray:
    """Energies as floats through the driver (where SQLite's printf may round)."""
    rows = conn.exec_driver_sql(
        "SELECT m.structure_id, l.energy FROM dataset_members m JOIN labels l "
        "ON l.id = m.label_id WHERE m.version_id = ? AND l.level_id = ?",
        (version_id, level_id)).all()
    got_sid = np.array([r[0] for r in rows], dtype=np.int64)
    e = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    pos = np.argsort(got_sid)
    return e[pos[np.searchsorted(got_sid, sid, sorter=pos)]]


def read_buckets(connect, dialect: str, version_id: int, level_ids: list[int], delta: bool,
                 n_structures: int) -> list[dict[str, np.ndarray]]:
    """The buckets of a version: SQLite single-level versions by :func:`_read_into_buckets`,
    the others by :func:`read_version` and :func:`bucketize`."""
    if dialect == "sqlite" and len(level_ids) == 1 and not delta:
        return _read_into_buckets(connect, version_id, level_ids[0], n_structures)
    return bucketize(read_version(connect, dialect, version_id, level_ids, delta,
                                  n_structures))


def _read_into_buckets(connect, version_id: int, level_id: int,
                       n_structures: int) -> list[dict[str, np.ndarray]]:
    """SQLite, one level: two passes over the ranges. The first reads the per-structure
    values, which fix the layout of the buckets; the second reads the atom arrays and the
    reader threads copy them straight into the zeroed blocks.

    The atom arrays are copied once, from the driver's values into the buckets, instead of
    into per-range arrays first (fresh memory whose page faults cost as much as the copies),
    and the copies run on the reader threads."""
    ranges = _ranges(connect, "sqlite", version_id, n_structures)
    f = _concat(_read_ranges(connect, "sqlite", version_id, ranges,
                             lambda rd, lo, hi: rd.chunk(level_id, lo, hi, True, meta=True)),
                keep=("hash",))  # the full hashes are joined only to break prefix ties
    sid, n_atoms = f["sid"], f["n_atoms"].astype(np.int64)
    n = len(sid)
    if n == 0:
        return []
    lay = layout(n_atoms, _hash_order(f["key"], lambda: np.concatenate(f["hash"])))
    blocks = new_blocks(lay.total)
    rows = {name: records(block) for name, block in blocks.items()}
    sorter = None if (sid[1:] > sid[:-1]).all() else np.argsort(sid, kind="stable")
    energy = np.full(n, np.nan)
    filled = []

    def fill(rd, lo, hi):
        for got, has_forces, got_energy, numbers, positions, forces in rd.atoms(level_id, lo,
                                                                              hi):
            at = np.minimum(np.searchsorted(sid, got, sorter=sorter), n - 1)
            idx = at if sorter is None else sorter[at]
            nat = n_atoms[idx]
            loc = np.concatenate([[0], np.cumsum(nat)])
            has = np.repeat(has_forces, nat)
            if (not np.array_equal(sid[idx], got) or len(numbers) != loc[-1]
                    or len(positions) != loc[-1] or len(forces) != int(has.sum())):
                raise RuntimeError("materialize: the atom arrays of structure ids "
                                   f"{lo}..{hi} do not match their structures")
            energy[idx] = got_energy
            dst = np.repeat(lay.base[idx] - loc[:-1], nat) + np.arange(loc[-1])
            np.put(rows["numbers"], dst, records(numbers))
            np.put(rows["positions"], dst, records(positions))
            if has.all():
                np.put(rows["forces"], dst, records(forces))
            else:
                np.put(rows["forces"], dst[has], records(forces))
                blocks["forces"][dst[~has]] = np.nan
            filled.append(len(got))

    _read_ranges(connect, "sqlite", version_id, ranges, fill)
    if sum(filled) != n:
        raise RuntimeError(f"materialize: read atom arrays of {sum(filled)} structures, "
                           f"expected {n}")
    if not _sqlite_exact_floats():
        with connect() as conn:
            energy = _exact_energies(conn, version_id, level_id, sid)
    cell, pbc = _cells_pbc(f)
    per = {"structure_id": sid, "n_atoms": n_atoms.astype(np.int32), "split": f["split"],
           "cell": cell, "pbc": pbc, "energy": energy}
    return assemble(lay, per, blocks)


