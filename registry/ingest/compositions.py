"""Compositions of an ingest: the distinct element-count vectors of its structures
(:class:`~registry.store.schema.Composition`), found or created in one transaction on a helper
connection while the input is hashed (:class:`PendingCompositions`), so that the structure
parts only carry an id."""

from __future__ import annotations

import json
import threading

import numpy as np
from sqlalchemy import text

from ..chem.elements import element_masks
from .composition_plan import Compositions, merge_compositions, plan_compositions

__all__ = ["Compositions", "PendingCompositions", "merge_compositions", "plan_compositions"]


def _ensure(conn, comps: Compositions) -> np.ndarray:
    """Ids of ``comps``, creating the missing ones with their element counts by a few
    set-based statements (no per-row round trip or RETURNING).

    Concurrent ingests creating the same composition are safe on PostgreSQL: the insert skips
    a formula another transaction holds (after waiting for it to end) and the ids are read
    back afterwards; inserts go in formula order, so two such transactions never wait on each
    other in a cycle. SQLite runs it under ``BEGIN IMMEDIATE`` (one writer at a time)."""
    pg = conn.dialect.name == "postgresql"
    hills = comps.hill
    found = _look_up(conn, hills, pg)
    missing = [i for i, h in enumerate(hills) if h not in found]
    if missing:
        missing.sort(key=hills.__getitem__)
        cols = {"h": [hills[i] for i in missing],
                "r": [comps.reduced[i] for i in missing],
                "a": [comps.anonymous[i] for i in missing],
                "n": comps.counts[missing].sum(axis=1).tolist(),
                "e": (comps.counts[missing] > 0).sum(axis=1).tolist(),
                "s": _element_sets(conn, comps.zs, comps.counts[missing], pg)}
        if pg:  # formulas another transaction created first are skipped here
            created = {h: cid for cid, h in conn.execute(_PG_INSERT, cols).all()}
        else:  # under BEGIN IMMEDIATE nothing else can have created them
            conn.exec_driver_sql(_SQLITE_INSERT, list(zip(*cols.values(), strict=True)))
            created = _look_up(conn, cols["h"], pg)
        found.update(created)
        if created:
            index = {hills[i]: i for i in missing}
            rows = comps.counts[[index[h] for h in created]]
            ids = np.fromiter(created.values(), dtype=np.int64, count=len(created))
            r, col = np.nonzero(rows)
            z, cid, count = comps.zs[col].tolist(), ids[r].tolist(), rows[r, col].tolist()
            if pg:
                conn.execute(_PG_ELEMENTS, {"z": z, "c": cid, "k": count})
            else:
                conn.exec_driver_sql(_SQLITE_ELEMENTS,
                                     list(zip(z, cid, count, strict=True)))
        if len(found) < len(hills):  # created meanwhile by a concurrent ingest
            found.update(_look_up(conn, [h for h in hills if h not in found], pg))
    return np.array([found[h] for h in hills], dtype=np.int64)


class PendingCompositions:
    """:func:`_ensure` on a helper thread, its transaction committed only by
    :meth:`commit` (after the input proved good) and rolled back otherwise: the database
    creates the compositions while the client hashes the input, and bad input still writes
    nothing. A context manager; leaving it without :meth:`commit` rolls back."""

    def __init__(self, engine, comps: Compositions):
        self.comps = comps
        self._decided = threading.Event()
        self._keep = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(engine,), daemon=True,
                                        name="nnp-compositions")
        self._thread.start()

    def _run(self, engine) -> None:
        try:
            with engine.connect() as conn:
                tx = conn.begin()
                try:
                    ids = _ensure(conn, self.comps)
                    self._decided.wait()
                    if not self._keep:
                        tx.rollback()
                        return
                    tx.commit()
                    self.comps.ids = ids
                except BaseException:
                    tx.rollback()
                    raise
        except BaseException as exc:  # re-raised by commit()
            self._error = exc

    def commit(self) -> np.ndarray:
        """Commit (waiting for the statements to finish); the ids, or the database error."""
        self._keep = True
        self._decided.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.comps.ids

    def __enter__(self) -> PendingCompositions:
        return self

    def __exit__(self, *exc) -> None:
        self._decided.set()  # without commit(): roll back
        self._thread.join()


_PG_LOOK_UP = text("SELECT formula_hill, id FROM compositions "
                   "WHERE formula_hill = ANY(CAST(:h AS text[]))")
_SQLITE_LOOK_UP = text("SELECT formula_hill, id FROM compositions "
                       "WHERE formula_hill IN (SELECT value FROM json_each(:h))")
_COLS = "formula_hill, formula_reduced, formula_anonymous, n_atoms, nelements, element_set_id"
_PG_INSERT = text(
    f"INSERT INTO compositions ({_COLS}) SELECT * FROM unnest(CAST(:h AS text[]), "
    "CAST(:r AS text[]), CAST(:a AS text[]), CAST(:n AS int4[]), CAST(:e AS int2[]), "
    "CAST(:s AS int8[])) ORDER BY 1 ON CONFLICT (formula_hill) DO NOTHING "
    "RETURNING id, formula_hill")
_SQLITE_INSERT = (f"INSERT INTO compositions ({_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (formula_hill) DO NOTHING")
_PG_SETS = text(
    "INSERT INTO element_sets (mask_lo, mask_hi, nelements) SELECT * FROM "
    "unnest(CAST(:lo AS int8[]), CAST(:hi AS int8[]), CAST(:n AS int2[])) ORDER BY 1, 2 "
    "ON CONFLICT (mask_lo, mask_hi) DO NOTHING")
_PG_SETS_LOOK_UP = text(
    "SELECT s.mask_lo, s.mask_hi, s.id FROM element_sets s JOIN unnest(CAST(:lo AS int8[]), "
    "CAST(:hi AS int8[])) AS m(lo, hi) ON s.mask_lo = m.lo AND s.mask_hi = m.hi")
_SQLITE_SETS = ("INSERT INTO element_sets (mask_lo, mask_hi, nelements) VALUES (?, ?, ?) "
                "ON CONFLICT (mask_lo, mask_hi) DO NOTHING")
_SQLITE_SETS_LOOK_UP = text(
    "SELECT mask_lo, mask_hi, id FROM element_sets WHERE (mask_lo, mask_hi) IN "
    "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:m))")


def _element_sets(conn, zs, counts: np.ndarray, pg: bool) -> list[int]:
    """Ids of the element sets of the compositions ``counts`` (rows), created if missing
    (in mask order, like compositions in formula order, so concurrent ingests never wait on
    each other in a cycle)."""
    lo, hi = element_masks(zs, counts)
    keys = sorted(set(zip(lo.tolist(), hi.tolist(), strict=True)))
    n = {k: int(c) for k, c in zip(zip(lo.tolist(), hi.tolist(), strict=True),
                                   (np.asarray(counts) > 0).sum(axis=1).tolist(), strict=True)}

    def look_up(wanted) -> dict:
        if pg:
            rows = conn.execute(_PG_SETS_LOOK_UP, {"lo": [k[0] for k in wanted],
                                                   "hi": [k[1] for k in wanted]}).all()
        else:
            rows = conn.execute(_SQLITE_SETS_LOOK_UP, {"m": json.dumps(wanted)}).all()
        return {(a, b): i for a, b, i in rows}

    ids = look_up(keys)
    # only the missing ones are inserted: on PostgreSQL a conflicting insert still takes
    # a value of the id sequence
    missing = [k for k in keys if k not in ids]
    if missing:
        if pg:
            conn.execute(_PG_SETS, {"lo": [k[0] for k in missing],
                                    "hi": [k[1] for k in missing],
                                    "n": [n[k] for k in missing]})
        else:
            conn.exec_driver_sql(_SQLITE_SETS, [(a, b, n[(a, b)]) for a, b in missing])
        ids.update(look_up(missing))
    return [ids[k] for k in zip(lo.tolist(), hi.tolist(), strict=True)]
_PG_ELEMENTS = text("INSERT INTO composition_elements (z, composition_id, count) SELECT * FROM "
                    "unnest(CAST(:z AS int2[]), CAST(:c AS int8[]), CAST(:k AS int4[]))")
_SQLITE_ELEMENTS = "INSERT INTO composition_elements (z, composition_id, count) VALUES (?, ?, ?)"


def _look_up(conn, hills: list[str], pg: bool) -> dict[str, int]:
    if pg:
        return dict(conn.execute(_PG_LOOK_UP, {"h": hills}).all())
    return dict(conn.execute(_SQLITE_LOOK_UP, {"h": json.dumps(hills)}).all())


__all__ = ["Compositions", "PendingCompositions", "merge_compositions", "plan_compositions"]
