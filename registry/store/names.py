"""The canonical spelling of a level-of-theory name, without the database: reader processes
use it; :func:`registry.store.levels.canonical_name` adds the checks."""

from __future__ import annotations


def level_form(name: str) -> str:
    """Lower case, trimmed, single spaces: ``wB97X/6-31G*`` -> ``wb97x/6-31g*``."""
    return " ".join(name.strip().lower().split())
