"""References to versioned things: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

Shared by models and dataset versions. ``parse_ref("water:3")`` -> ``Ref("water", 3, None)``;
``parse_ref("water@production")`` -> ``Ref("water", None, "production")``; a bare ``NAME`` means
the automatic ``latest`` alias (what that is depends on the kind of thing; see its resolver).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import BadInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+/]{0,254}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
LATEST = "latest"


class Ref(NamedTuple):
    """A parsed reference; exactly one of ``version`` / ``alias`` is set (alias may be latest)."""

    name: str
    version: int | None
    alias: str | None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}"


def check_name(name: str, what: str = "name") -> str:
    """``name`` unchanged if it is a valid registry name, else :class:`BadInput`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"invalid {what} {name!r}: use letters, digits and . _ - + / "
                       "(no ':' or '@', at most 255 characters)")
    return name


def check_alias(alias: str) -> str:
    """``alias`` unchanged if valid (lower case, starts with a letter), else :class:`BadInput`."""
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise BadInput(f"invalid alias {alias!r}: lower-case letters, digits, '_' and '-', "
                       "starting with a letter")
    return alias


def parse_ref(ref: str) -> Ref:
    """Parse ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``; bare ``NAME`` is ``NAME@latest``."""
    if not isinstance(ref, str) or not ref.strip():
        raise BadInput(f"empty reference {ref!r}: expected NAME, NAME:VERSION or NAME@ALIAS")
    ref = ref.strip()
    if "@" in ref:
        name, _, alias = ref.partition("@")
        return Ref(check_name(name), None, check_alias(alias))
    if ":" in ref:
        name, _, ver = ref.rpartition(":")
        if not ver.isdigit() or int(ver) < 1:
            raise BadInput(f"invalid version {ver!r} in {ref!r}: expected a positive integer")
        return Ref(check_name(name), int(ver), None)
    return Ref(check_name(ref), None, LATEST)
