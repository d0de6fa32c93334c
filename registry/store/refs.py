"""References to versioned things: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.

Shared by models and dataset versions. ``parse_ref("water:3")`` -> ``Ref("water", 3, None)``;
``parse_ref("water@production")`` -> ``Ref("water", None, "production")``; a bare ``NAME`` means
the automatic ``latest`` alias (what that is depends on the kind of thing; see its resolver).
"""

from __future__ import annotations

import operator
import re
from typing import NamedTuple

from sqlalchemy import BigInteger, SmallInteger

from ..errors import BadInput
from .tables import model_aliases, model_versions, models

INT64_MAX = 2**63 - 1
# Limits from the columns the names are stored in (datasets share the models' lengths).
NAME_MAX = models.c.name.type.length
ALIAS_MAX = model_aliases.c.alias.type.length
NAME_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._\-+/]{{0,{NAME_MAX - 1}}}$")
ALIAS_RE = re.compile(rf"^[a-z][a-z0-9_\-]{{0,{ALIAS_MAX - 1}}}$")
LATEST = "latest"
# A version longer than this is out of range anyway (and int() of huge text is slow).
_DIGITS = re.compile(r"^[0-9]{1,20}$")


def int_range(column) -> tuple[int, int]:
    """(lowest, highest) value an integer column holds on every backend: SMALLINT, INTEGER
    and BIGINT are 2, 4 and 8 bytes on PostgreSQL (SQLite stores any of them in 8)."""
    t = column.type
    bits = 16 if isinstance(t, SmallInteger) else 64 if isinstance(t, BigInteger) else 32
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def max_length(column) -> int | None:
    """The declared length of a ``String(N)`` column (None: unbounded)."""
    return getattr(column.type, "length", None)


def shown(value) -> str:
    """``value`` quoted for a message, text cut after 40 characters."""
    if not isinstance(value, str):
        return repr(value)
    return repr(value if len(value) <= 40 else value[:40] + "...")


def check_text(value, what: str, column=None):
    """``value`` unchanged if it fits ``column`` (a ``String(N)``: at most N characters, the
    same limit on both backends) and has no NUL character (PostgreSQL refuses those)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{what} must be text, got {type(value).__name__}")
    limit = max_length(column) if column is not None else None
    if limit is not None and len(value) > limit:
        raise BadInput(f"{what} {shown(value)} is too long: {len(value)} characters, "
                       f"at most {limit}")
    if "\x00" in value:
        raise BadInput(f"{what} {shown(value)} contains a NUL character")
    return value


def check_int(value, what: str, lo: int | None = 1, hi: int | None = INT64_MAX) -> int:
    """``value`` as an int if it is an integer in ``lo..hi`` (None: unbounded), else
    :class:`BadInput`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # int, numpy integers; not floats or text
    except TypeError:
        raise BadInput(f"{what} must be an integer, got {value!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        expected = f"{lo} to {hi}" if lo is not None and hi is not None else \
            f"at least {lo}" if lo is not None else f"at most {hi}"
        raise BadInput(f"{what} {value} is out of range: expected {expected}")
    return value


def fits_id(value) -> bool:
    """Whether ``value`` can be a row id (1..2**63-1): larger ones exist nowhere, and a
    database driver would refuse to bind them."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT64_MAX


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
    if isinstance(name, str) and not name.strip():
        raise BadInput(f"empty {what} {name!r}: use letters, digits and . _ - + /")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"invalid {what} {shown(name)}: use letters, digits and . _ - + / "
                       f"(no ':' or '@', at most {NAME_MAX} characters)")
    return name


def check_alias(alias: str) -> str:
    """``alias`` unchanged if valid (lower case, starts with a letter), else :class:`BadInput`."""
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise BadInput(f"invalid alias {shown(alias)}: lower-case letters, digits, '_' and '-', "
                       f"starting with a letter, at most {ALIAS_MAX} characters")
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
        top = int_range(model_versions.c.version)[1]  # dataset versions: the same INTEGER
        if not _DIGITS.match(ver) or not 1 <= int(ver) <= top:
            raise BadInput(f"invalid version {shown(ver)} in {shown(ref)}: expected a "
                           f"positive integer up to {top}")
        return Ref(check_name(name), int(ver), None)
    return Ref(check_name(ref), None, LATEST)
