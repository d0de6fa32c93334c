"""PostgreSQL binary COPY streams for prepared batches, built without per-field dumpers.

A stream is ``(columns, pieces)``: the column names and an iterable of byte strings whose
concatenation is the COPY data. Each row is laid out as

    [field count][fixed-width fields ...][length of var 1] var 1 [length] var 2 ...

Everything up to the first variable-width value is one numpy structured record per row,
packed for all rows at once (big-endian): numbers, constant values, values of one byte length
in every row (hex digests, equal strings), columns that are NULL in every row (a -1 length and
no data), and the length prefix of the first variable value. The other length prefixes come
from one packed int32 array. Rows are then joined by ``bytes.join`` from slices, a few thousand
rows per piece, so Python never concatenates per value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import chain, islice

import numpy as np

from ..chem.arrays import take
from ..chem.identity import HASH_VERSION

HEADER = b"PGCOPY\n\xff\r\n\0" + bytes(8)
TRAILER = b"\xff\xff"
_PIECE_ROWS = 2048  # rows per piece of a stream (see _pieces)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def timestamp(now: datetime) -> int:
    """timestamptz in COPY binary: microseconds since 2000-01-01 UTC."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return (now - _EPOCH) // timedelta(microseconds=1)


def _column(values, lens=None) -> tuple[list, np.ndarray | None]:
    """(values as bytes, lengths with -1 for NULL), or (values, None) if every row is NULL.
    A column holds one type: str values are UTF-8 encoded, except ASCII columns of one
    length (hex digests), which become one numpy ``S{w}`` array. A single bytes or str
    value is a constant column. ``lens``: the byte lengths, where the caller knows them (no
    NULLs then)."""
    if isinstance(values, bytes | str):
        v = values.encode() if isinstance(values, str) else values
        return [v], np.array([len(v)])
    n = len(values)
    if lens is not None:
        return values, np.asarray(lens, dtype=np.int64)
    if n and isinstance(values[0], str):
        strings = _strings(values)
        if strings is not None:
            return strings
    nulls = values.count(None)
    if nulls == n:
        return values, None
    if nulls:
        if any(isinstance(v, str) for v in values):
            values = [None if v is None else v.encode() for v in values]
        lens = np.fromiter((-1 if v is None else len(v) for v in values), dtype=np.int64,
                           count=n)
        return values, lens
    return values, np.fromiter(map(len, values), dtype=np.int64, count=n)


def _strings(values: list) -> tuple[list, np.ndarray] | None:
    """A text column without NULLs, encoded at once: one join, one encode and one split, the
    lengths from the separators' positions; ASCII values of one length as one ``S{w}`` array.
    None where a value is NULL or holds the separator."""
    try:
        joined = "\0".join(values)
    except TypeError:  # a NULL among the strings
        return None
    if joined.count("\0") != len(values) - 1:
        return None
    raw = joined.encode()
    ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 0)
    lens = np.diff(np.concatenate([[-1], ends, [len(raw)]])) - 1
    if len(raw) == len(joined) and (lens == lens[0]).all() and lens[0]:  # one length: S{w}
        w = int(lens[0])
        rows = np.frombuffer(raw + b"\0", dtype=np.uint8).reshape(len(values), w + 1)
        return np.ascontiguousarray(rows[:, :w]).view(f"S{w}").reshape(-1), lens
    return raw.split(b"\0"), lens


def pack(n: int, fixed: list[tuple[str, str, object]], var: list[tuple]):
    """Binary COPY stream of ``n`` rows: ``fixed`` (name, '>i8'-style code, values or a
    scalar) and ``var`` (name, list of bytes/str/None, or one bytes/str value for every row;
    optionally the values' byte lengths third) columns, in that order."""
    fields = [("nf", ">i2")]
    assign = [("nf", len(fixed) + len(var))]
    for name, code, values in fixed:
        fields += [(f"l_{name}", ">i4"), (name, code)]
        assign += [(f"l_{name}", np.dtype(code).itemsize), (name, values)]
    names = [name for name, _, _ in fixed]
    rest: list[tuple[str, list, np.ndarray]] = []
    for name, values, *known in var:
        values, lens = _column(values, *known)
        if lens is not None and not (lens == lens[0]).all():  # lengths vary by row
            rest.append((name, values, lens))
            continue
        names.append(name)
        fields.append((f"l_{name}", ">i4"))
        w = -1 if lens is None else int(lens[0])
        assign.append((f"l_{name}", w))
        if w > 0:  # the same length in every row: a fixed field
            fields.append((name, f"S{w}"))
            assign.append((name, np.array(values, dtype=f"S{w}") if len(values) > 1
                           else np.bytes_(values[0])))
    if rest:  # the first variable value's length closes the fixed record
        fields.append(("l_first", ">i4"))
        assign.append(("l_first", rest[0][2]))
    dt = np.dtype(fields)
    rec = np.empty(n, dtype=dt)
    for name, value in assign:
        rec[name] = value
    w = dt.itemsize
    if not rest:  # fixed-width rows only: the records are the stream
        return names, [HEADER, rec.tobytes(), TRAILER]
    buf = rec.tobytes()
    columns = [[buf[i: i + w] for i in range(0, n * w, w)]]
    for k, (name, values, lens) in enumerate(rest):
        names.append(name)
        if k:
            lb = lens.astype(">i4").tobytes()
            columns.append([lb[i: i + 4] for i in range(0, 4 * n, 4)])
        columns.append([b"" if v is None else v for v in values] if (lens < 0).any()
                       else values)
    return names, _pieces(columns, n)


def _pieces(columns: list[list], n: int):
    """The stream of ``n`` rows in pieces of ``_PIECE_ROWS`` rows, joined lazily: a piece is
    sent before the next is joined, so the server starts on the rows sooner and the piece's
    buffer is reused, where one join per stream would take fresh memory for every COPY."""
    yield HEADER
    rows = zip(*columns, strict=True)
    for _ in range(0, n, _PIECE_ROWS):
        yield b"".join(chain.from_iterable(islice(rows, _PIECE_ROWS)))
    yield TRAILER


def structure_stream(pb, rows: np.ndarray, ids: np.ndarray, run_id: int, now: datetime):
    """New structures ``rows`` (indices into ``pb``, in insertion order) with their ``ids``."""
    r = rows.tolist()
    fixed = [("id", ">i8", ids[rows]), ("hash_version", ">i2", HASH_VERSION),
             ("n_atoms", ">i4", pb.n_atoms[rows]),
             ("pbc", ">i2", pb.pbc[rows]), ("nperiodic", ">i2", pb.nperiodic[rows]),
             ("charge", ">i2", pb.charge[rows]),
             ("multiplicity", ">i2", pb.multiplicity[rows]),
             ("composition_id", ">i8", pb.composition_id[rows]), ("run_id", ">i8", run_id),
             ("created_at", ">i8", timestamp(now))]
    every = r == list(range(len(pb)))  # all of the part, in order (as the SQLite writer)

    def pick(col):
        return col if every else take(col, r)

    n_atoms = pb.n_atoms[rows].astype(np.int64)
    var = [(name, pick(col)) for name, col in (
        ("hash", pb.hashes), ("cell", pb.cells), ("source", pb.sources), ("info", pb.infos))]
    var += [("numbers", pick(pb.numbers), n_atoms), ("positions", pick(pb.positions),
                                                      24 * n_atoms)]
    return pack(len(r), fixed, var)


def _float_column(name: str, values: list, fixed: list, var: list) -> None:
    """A nullable float column: a fixed '>f8' field when no row is NULL, else variable."""
    if None not in values:
        fixed.append((name, ">f8", np.asarray(values, dtype=np.float64)))
    else:
        var.append((name, [None if v is None else np.float64(v).astype(">f8").tobytes()
                           for v in values]))


def labels_stream(picks, run_id: int, now: datetime):
    """Label rows from ``picks``: (LabelRows, level_id, kept positions, structure ids,
    composition ids)."""
    sid = np.concatenate([sids[keep] for _, _, keep, sids, _ in picks])
    cid = np.concatenate([cids[keep] for _, _, keep, _, cids in picks])
    lid = np.concatenate([np.full(len(keep), level) for _, level, keep, _, _ in picks])
    o = np.lexsort((sid, lid))  # the key order (level_id, structure_id)
    ordered = len(o) < 2 or bool((np.diff(o) == 1).all())  # as the picks come, usually
    order = o.tolist()

    def gather(attr):
        flat = []
        for lr, _, keep, _, _ in picks:
            col = getattr(lr, attr)
            flat.extend(col if len(keep) == len(col) else take(col, keep.tolist()))
        return flat if ordered else take(flat, order)

    def per_label(attr):  # one value for all picks: a constant column
        values = {getattr(lr, attr) for lr, *_ in picks}
        if len(values) == 1 and None not in values:
            return values.pop()
        flat = [s for lr, _, keep, *_ in picks for s in [getattr(lr, attr)] * len(keep)]
        return flat if ordered else take(flat, order)

    fixed = [("structure_id", ">i8", sid[o]), ("level_id", ">i8", lid[o]),
             ("composition_id", ">i8", cid[o]),
             ("run_id", ">i8", run_id), ("created_at", ">i8", timestamp(now))]
    var = [("hash", gather("hashes")), ("status", per_label("status")),
           ("source_unit", per_label("source_unit"))]
    _float_column("energy", gather("energy"), fixed, var)
    _float_column("max_force", gather("max_force"), fixed, var)
    var += [("dipole", gather("dipole")), ("charges", gather("charges")),
            ("stress", gather("stress")), ("forces", gather("forces"))]
    return pack(len(o), fixed, var)


def copy_into(cur, table: str, stream: tuple[list[str], Iterable[bytes]]) -> None:
    """Binary-COPY a ``(columns, pieces)`` stream into ``table`` on a psycopg cursor."""
    from psycopg import sql

    cols, pieces = stream
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))
    with cur.copy(stmt) as cp:
        for piece in pieces:
            cp.write(piece)
