"""``Registry.query`` / ``Registry.count``: run a filter against the store.

Core only (a connection, the tables of :mod:`registry.store.tables`): a cold ``nnp query``
never imports the ORM.
"""

from __future__ import annotations

from sqlalchemy import and_, func, select

from ..store.refs import check_int
from ..store.rows import driver_rows
from ..store.tables import compositions, labels, structures
from ..times import utc
from . import as_filter, structure_filter  # the package entry points (parse lazily)
from .ast import Cond
from .compile import Compiler, level_id, per_atom

ROW_COLUMNS = ("id", "hash", "formula", "nsites", "nelements", "nperiodic", "source",
               "created_at")
LEVEL_COLUMNS = ("energy", "energy_per_atom", "max_force")


def _limit(limit: int | None) -> int | None:
    """None (all) or an integer 0..2**63-1: the range a LIMIT takes on both backends."""
    return None if limit is None else check_int(limit, "limit", lo=0)


def _compiled(s, filter, level):
    """(clause over structures, id select on labels or None) for ``filter`` in connection
    ``s``: the id select when the filter is one level + composition meeting."""
    comp = Compiler(level=level, session=s)
    where = comp.root(as_filter(filter))
    return where, comp.id_select


def query_ids(reg, filter: str | Cond | None = None, *, level: str | None = None,
              limit: int | None = None) -> list[int]:
    """Ids of the structures matching ``filter`` (OPTIMADE text or :data:`Q`), by id."""
    limit = _limit(limit)
    S = structures.c
    with reg.connect() as s:
        where, id_select = _compiled(s, filter, level)
        if id_select is not None:  # answered from an index of labels alone
            ids = id_select.subquery()
            q = select(ids.c.id).order_by(ids.c.id)
        else:
            q = select(S.id).where(where).order_by(S.id)
        rows = driver_rows(s, q.limit(limit) if limit is not None else q)
        return [row[0] for row in rows]


def query(reg, filter: str | Cond | None = None, *, level: str | None = None,
          limit: int | None = None) -> list[dict]:
    """Matching structures as dicts (:data:`ROW_COLUMNS`, plus the ok label's energy,
    energy per atom and max force at ``level`` when given), ordered by id."""
    limit = _limit(limit)
    S, C = structures.c, compositions.c
    with reg.connect() as s:
        where = structure_filter(filter, level=level, session=s)
        cols = [S.id, S.hash, C.formula_hill, S.n_atoms, C.nelements, S.nperiodic, S.source,
                S.created_at]
        q = select(*cols).join(compositions, C.id == S.composition_id)
        if level is not None:
            lab_t = labels.alias()
            lab, lid = lab_t.c, level_id(level, s)
            q = q.add_columns(lab.energy, per_atom(lab, lid), lab.max_force).outerjoin(
                lab_t, and_(lab.structure_id == S.id, lab.level_id == lid,
                            lab.status == "ok"))
        q = q.where(where).order_by(S.id)
        if limit is not None:
            q = q.limit(limit)
        rows = []
        for r in s.execute(q):
            row = dict(zip(ROW_COLUMNS, r[:8], strict=True))
            row["created_at"] = utc(row["created_at"])  # SQLite keeps UTC without a zone
            if level is not None:
                row.update(zip(LEVEL_COLUMNS, r[8:], strict=True))
            rows.append(row)
        return rows


def count(reg, filter: str | Cond | None = None, *, level: str | None = None) -> int:
    """Number of structures matching ``filter``."""
    with reg.connect() as s:
        where, id_select = _compiled(s, filter, level)
        if id_select is not None:  # answered from an index of labels alone
            return s.scalar(select(func.count()).select_from(id_select.subquery()))
        return s.scalar(select(func.count()).select_from(structures).where(where))
