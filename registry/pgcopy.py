"""PostgreSQL binary COPY streams for prepared batches, built without per-field dumpers.

A stream is ``(columns, bytes)``. Fixed-width columns come first in each row and are packed
for all rows at once with a numpy structured (big-endian) dtype; variable-width values
(bytea, text, nullable numbers) get a 4-byte length prefix (-1 for NULL) and are joined.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from itertools import chain

import numpy as np

from .identity import HASH_VERSION

HEADER = b"PGCOPY\n\xff\r\n\0" + bytes(8)
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_LEN = struct.Struct(">i").pack
_F8 = struct.Struct(">id").pack


def timestamp(now: datetime) -> int:
    """timestamptz in COPY binary: microseconds since 2000-01-01 UTC."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return (now - _EPOCH) // timedelta(microseconds=1)


def _fixed(n_fields: int, cols: list[tuple[str, str, object]], n: int) -> list[bytes]:
    """Per-row bytes of the field count and the fixed-width fields (name, '>i8', values)."""
    dt = np.dtype([("nf", ">i2")] + [f for name, code, _ in cols
                                     for f in ((f"l_{name}", ">i4"), (name, code))])
    arr = np.empty(n, dtype=dt)
    arr["nf"] = n_fields
    for name, code, values in cols:
        arr[f"l_{name}"] = np.dtype(code).itemsize
        arr[name] = values
    buf, w = arr.tobytes(), dt.itemsize
    return [buf[i: i + w] for i in range(0, n * w, w)]


def _var(values) -> list[bytes]:
    """Length-prefixed bytes (str is encoded as UTF-8; None is NULL)."""
    out = []
    for v in values:
        if v is None:
            out.append(NULL)
        else:
            if isinstance(v, str):
                v = v.encode()
            out.append(_LEN(len(v)) + v)
    return out


def _float(values) -> list[bytes]:
    return [NULL if v is None else _F8(8, v) for v in values]


def _stream(fixed: list[bytes], var: list[list[bytes]]) -> bytes:
    return HEADER + b"".join(chain.from_iterable(zip(fixed, *var, strict=True))) + TRAILER


def structure_stream(pb, rows: np.ndarray, ids: np.ndarray, run_id: int, now: datetime):
    """New structures ``rows`` (indices into ``pb``, in insertion order) with their ``ids``."""
    n = len(rows)
    r = rows.tolist()
    fixed_cols = [("id", ">i8", ids[rows]), ("hash_version", ">i2", HASH_VERSION),
                  ("n_atoms", ">i4", pb.n_atoms[rows]), ("nelements", ">i2", pb.nelements[rows]),
                  ("pbc", ">i2", pb.pbc[rows]), ("nperiodic", ">i2", pb.nperiodic[rows]),
                  ("charge", ">i2", pb.charge[rows]),
                  ("multiplicity", ">i2", pb.multiplicity[rows]), ("run_id", ">i8", run_id),
                  ("created_at", ">i8", timestamp(now))]
    var_cols = {"hash": pb.hashes, "numbers": pb.numbers, "positions": pb.positions,
                "cell": pb.cells, "formula_hill": pb.hill, "formula_reduced": pb.reduced,
                "formula_anonymous": pb.anonymous, "source": pb.sources, "info": pb.infos}
    n_fields = len(fixed_cols) + len(var_cols)
    fixed = _fixed(n_fields, fixed_cols, n)
    var = [_var([col[i] for i in r]) for col in var_cols.values()]
    return [c[0] for c in fixed_cols] + list(var_cols), _stream(fixed, var)


def elements_stream(sids: np.ndarray, z: np.ndarray, count: np.ndarray):
    n = len(sids)
    cols = [("structure_id", ">i8", sids), ("z", ">i2", z), ("count", ">i4", count)]
    order = np.lexsort((z, sids))
    cols = [(a, b, v[order]) for a, b, v in cols]
    return [c[0] for c in cols], _stream(_fixed(3, cols, n), [])


def labels_stream(picks, run_id: int, now: datetime):
    """Label rows from ``picks``: (LabelRows, level_id, kept positions, structure ids)."""
    sid = np.concatenate([sids[keep] for _, _, keep, sids in picks])
    lid = np.concatenate([np.full(len(keep), level) for _, level, keep, _ in picks])
    order = np.lexsort((lid, sid)).tolist()

    def gather(attr):
        flat = []
        for lr, _, keep, _ in picks:
            col = getattr(lr, attr)
            flat.extend(col[k] for k in keep.tolist())
        return [flat[i] for i in order]

    status = [s for lr, _, keep, _ in picks for s in [lr.status] * len(keep)]
    unit = [s for lr, _, keep, _ in picks for s in [lr.source_unit] * len(keep)]
    fixed_cols = [("structure_id", ">i8", sid[order]), ("level_id", ">i8", lid[order]),
                  ("run_id", ">i8", run_id), ("created_at", ">i8", timestamp(now))]
    var = [_var(gather("hashes")), _float(gather("energy")), _var(gather("forces")),
           _var(gather("dipole")), _var(gather("charges")), _var(gather("stress")),
           _float(gather("max_force")), _var([status[i] for i in order]),
           _var([unit[i] for i in order])]
    names = [c[0] for c in fixed_cols] + ["hash", "energy", "forces", "dipole", "charges",
                                          "stress", "max_force", "status", "source_unit"]
    return names, _stream(_fixed(len(names), fixed_cols, len(sid)), var)
