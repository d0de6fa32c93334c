"""Reading back: stats and frames (for export)."""

from __future__ import annotations

from sqlalchemy import func, select

from .elements import SYMBOLS
from .schema import Label, LevelOfTheory, Structure, StructureElement


class ReadMixin:
    def stats(self) -> dict:
        """Counts of structures and labels per level, elements present, URL and size."""
        from .db import database_size

        with self.session() as s:
            n_struct = s.scalar(select(func.count()).select_from(Structure))
            per_level = s.execute(
                select(LevelOfTheory.name, Label.status, func.count())
                .join(Label, Label.level_id == LevelOfTheory.id)
                .group_by(LevelOfTheory.name, Label.status)).all()
            elems = s.execute(select(StructureElement.z, func.count())
                              .group_by(StructureElement.z).order_by(StructureElement.z)).all()
            levels = {}
            for name, status, n in per_level:
                levels.setdefault(name, {})[status] = n
            for name in s.scalars(select(LevelOfTheory.name)):
                levels.setdefault(name, {})
        return {
            "database": self.engine.url.render_as_string(hide_password=True),
            "dialect": self.dialect,
            "size_bytes": database_size(self.engine),
            "structures": n_struct,
            "labels": {k: {"ok": v.get("ok", 0), **v} for k, v in sorted(levels.items())},
            "elements": {SYMBOLS[z]: n for z, n in elems},
        }
