"""What the registry holds: counts of structures, labels per level and elements (``nnp stats``).

Core only, and apart from :mod:`.structures` (which reads arrays back), so that a cold
``nnp stats`` imports neither the ORM nor numpy.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..chem.elements import SYMBOLS
from .engine import database_size
from .tables import composition_elements, labels, levels_of_theory, structures


def stats(reg) -> dict:
    """Counts of structures and labels per level, elements present, URL and size."""
    lot, lab, ce = levels_of_theory.c, labels.c, composition_elements.c
    with reg.connect() as s:
        n_struct = s.scalar(select(func.count()).select_from(structures))
        per_level = s.execute(
            select(lot.name, lab.status, func.count())
            .join(labels, lab.level_id == lot.id)
            .group_by(lot.name, lab.status)).all()
        elems = s.execute(select(ce.z, func.count()).select_from(structures)
                          .join(composition_elements,
                                ce.composition_id == structures.c.composition_id)
                          .group_by(ce.z).order_by(ce.z)).all()
        levels = {}
        for name, status, n in per_level:
            levels.setdefault(name, {})[status] = n
        for name in s.scalars(select(lot.name)):
            levels.setdefault(name, {})
    return {
        "database": reg.engine.url.render_as_string(hide_password=True),
        "dialect": reg.dialect,
        "size_bytes": database_size(reg.engine),
        "structures": n_struct,
        "labels": {k: {"ok": v.get("ok", 0), **v} for k, v in sorted(levels.items())},
        "elements": {SYMBOLS[z]: n for z, n in elems},
    }
