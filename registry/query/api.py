"""``Registry.query`` / ``Registry.count``: run a filter against the store."""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import and_, func, select
from sqlalchemy.orm import aliased

from ..store.refs import check_int
from ..store.schema import Composition, Label, Structure
from . import structure_filter  # the package entry point (parses lazily)
from .ast import Cond
from .compile import level_id, per_atom

ROW_COLUMNS = ("id", "hash", "formula", "nsites", "nelements", "nperiodic", "source",
               "created_at")
LEVEL_COLUMNS = ("energy", "energy_per_atom", "max_force")


def _limit(limit: int | None) -> int | None:
    """None (all) or an integer 0..2**63-1: the range a LIMIT takes on both backends."""
    return None if limit is None else check_int(limit, "limit", lo=0)


def query_ids(reg, filter: str | Cond | None = None, *, level: str | None = None,
              limit: int | None = None) -> list[int]:
    """Ids of the structures matching ``filter`` (OPTIMADE text or :data:`Q`), by id."""
    limit = _limit(limit)
    with reg.session() as s:
        q = (select(Structure.id).where(structure_filter(filter, level=level, session=s))
             .order_by(Structure.id))
        return list(s.scalars(q.limit(limit) if limit is not None else q))


def query(reg, filter: str | Cond | None = None, *, level: str | None = None,
          limit: int | None = None) -> list[dict]:
    """Matching structures as dicts (:data:`ROW_COLUMNS`, plus the ok label's energy,
    energy per atom and max force at ``level`` when given), ordered by id."""
    limit = _limit(limit)
    with reg.session() as s:
        where = structure_filter(filter, level=level, session=s)
        cols = [Structure.id, Structure.hash, Composition.formula_hill, Structure.n_atoms,
                Composition.nelements, Structure.nperiodic, Structure.source,
                Structure.created_at]
        q = select(*cols).join(Composition, Composition.id == Structure.composition_id)
        if level is not None:
            lab = aliased(Label)
            lid = level_id(level, s)
            q = q.add_columns(lab.energy, per_atom(lab, lid), lab.max_force).outerjoin(
                lab, and_(lab.structure_id == Structure.id, lab.level_id == lid,
                          lab.status == "ok"))
        q = q.where(where).order_by(Structure.id)
        if limit is not None:
            q = q.limit(limit)
        rows = []
        for r in s.execute(q):
            row = dict(zip(ROW_COLUMNS, r[:8], strict=True))
            if row["created_at"].tzinfo is None:  # SQLite keeps UTC without a zone
                row["created_at"] = row["created_at"].replace(tzinfo=UTC)
            if level is not None:
                row.update(zip(LEVEL_COLUMNS, r[8:], strict=True))
            rows.append(row)
        return rows


def count(reg, filter: str | Cond | None = None, *, level: str | None = None) -> int:
    """Number of structures matching ``filter``."""
    with reg.session() as s:
        return s.scalar(select(func.count()).select_from(Structure)
                        .where(structure_filter(filter, level=level, session=s)))
