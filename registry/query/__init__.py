"""Curation queries: OPTIMADE filters (or the :data:`Q` builder) compiled to SQL.

``structure_filter('elements HAS ALL "C","N" AND nsites <= 12')`` is a boolean SQLAlchemy
Core clause over the ``structures`` table (:mod:`registry.store.tables`), e.g.
``select(structures.c.id).where(clause)``; ORM queries on ``Structure`` take it as well.
``Q.elements.has_all("C", "N") & (Q.nsites <= 12)`` builds the same filter in Python.
:data:`FIELDS` lists the fields; ``_nnp_energy``-like fields need ``level=``.
"""

from __future__ import annotations

from .ast import Cond, Q
from .fields import FIELDS, FieldSpec
from .parse import parse


def as_filter(query: str | Cond | None) -> Cond:
    """A filter expression from OPTIMADE text, a builder expression or None (everything)."""
    if query is None:
        return parse("")
    return query if isinstance(query, Cond) else parse(query)


def structure_filter(text: str | Cond | None, *, level: str | None = None, session=None):
    """Boolean clause over ``structures`` for a filter (text or :data:`Q` expression).

    ``level`` is the level of theory for ``_nnp_energy``, ``_nnp_energy_per_atom`` and
    ``_nnp_max_force``. With ``session`` unknown levels/datasets raise at once and names are
    bound as ids (faster plans); without one they are looked up inside the SQL.
    Raises :class:`registry.errors.BadInput` (syntax, unknown field, wrong type) with the
    position and the valid fields.
    """
    from .compile import Compiler

    return Compiler(level=level, session=session).root(as_filter(text))


__all__ = ["FIELDS", "Cond", "FieldSpec", "Q", "as_filter", "parse", "structure_filter"]
