"""Levels of theory: canonical names, parsing and content hashes."""

from __future__ import annotations

import hashlib
import json
import re

from .errors import BadInput

_NAME = re.compile(r"^[a-z0-9][a-z0-9()*+,\-_.'/ ]*$")


def canonical_name(name: str) -> str:
    """Lower-case, trimmed level name, e.g. ``wB97X/6-31G*`` -> ``wb97x/6-31g*``."""
    canon = " ".join(name.strip().lower().split())
    if not canon or not _NAME.match(canon):
        raise BadInput(f"invalid level-of-theory name {name!r}")
    return canon


def parse_name(name: str) -> tuple[str, str | None]:
    """(method, basis) from a canonical name: ``ccsd(t)/cc-pvdz`` -> (``ccsd(t)``, ``cc-pvdz``)."""
    canon = canonical_name(name)
    method, _, basis = canon.partition("/")
    if not method:
        raise BadInput(f"level-of-theory name {name!r} has no method")
    return method, basis or None


def level_hash(method, basis, program, program_version, keywords) -> str:
    """sha256 over every field that defines a level (keywords as canonical JSON)."""
    payload = json.dumps(
        [method, basis, program, program_version, keywords or {}],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()
