"""Filter expressions as small immutable trees, and the :data:`Q` builder that makes them.

The OPTIMADE text parser and the Python builder both produce these nodes, so a filter written
either way compiles to the same SQL. ``str(node)`` renders it back as OPTIMADE filter text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import BadInput
from .fields import FIELDS, check_has, check_op

# How big a filter may be: both backends answer every filter within these, and anything
# beyond is refused with a clear message (docs/queries.md). The depth is bound by SQLite,
# whose parser has a fixed stack of about 100 entries: each nested AND/OR group holds one,
# and a sub-query deep inside (energy per atom) about 30 more.
MAX_DEPTH = 64  # nested AND/OR groups (parentheses in the text)
MAX_TERMS = 1000  # conditions, counting each value of a HAS list

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}
Value = str | int | float


def _lit(v: Value) -> str:
    """A value as filter text that parses back to the same value: strings escape only what
    the grammar escapes (backslash and double quote; other characters stand as themselves),
    and an infinite bound (a literal beyond every float) is written as one again."""
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float) and math.isinf(v):
        return "1e999" if v > 0 else "-1e999"
    return repr(v)


class Cond:
    """A boolean filter expression; combine with ``&``, ``|`` and ``~``."""

    def __and__(self, other: Cond) -> Cond:
        return And((*_items(self, And), *_items(_cond(other), And)))

    def __or__(self, other: Cond) -> Cond:
        return Or((*_items(self, Or), *_items(_cond(other), Or)))

    def __invert__(self) -> Cond:
        return negate(self)

    def __bool__(self):
        raise TypeError("a filter has no truth value: combine filters with &, | and ~, "
                        "not `and`, `or`, `not` or chained comparisons")


def _cond(x) -> Cond:
    if not isinstance(x, Cond):
        raise TypeError(f"expected a filter expression, got {type(x).__name__}")
    return x


def _items(c: Cond, kind) -> tuple[Cond, ...]:
    return c.items if isinstance(c, kind) else (c,)


@dataclass(frozen=True, eq=True)
class Everything(Cond):
    """The empty filter: every structure."""

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True)
class Cmp(Cond):
    """``field OP value`` with OP one of = != < <= > >=."""

    field: str
    op: str
    value: Value

    def __str__(self) -> str:
        return f"{self.field} {self.op} {_lit(self.value)}"


@dataclass(frozen=True)
class Fuzzy(Cond):
    """``field CONTAINS | STARTS WITH | ENDS WITH "text"``."""

    field: str
    op: str  # CONTAINS, STARTS WITH, ENDS WITH
    value: str

    def __str__(self) -> str:
        return f"{self.field} {self.op} {_lit(self.value)}"


@dataclass(frozen=True)
class Has(Cond):
    """``field HAS v`` (mode ""), ``HAS ALL``, ``HAS ANY`` or ``HAS ONLY`` a list."""

    field: str
    mode: str  # "", ALL, ANY, ONLY
    values: tuple[Value, ...]

    def __str__(self) -> str:
        mode = f" {self.mode}" if self.mode else ""
        return f"{self.field} HAS{mode} " + ", ".join(_lit(v) for v in self.values)


@dataclass(frozen=True)
class Known(Cond):
    """``field IS KNOWN`` (known=True) or ``IS UNKNOWN``."""

    field: str
    known: bool

    def __str__(self) -> str:
        return f"{self.field} IS {'KNOWN' if self.known else 'UNKNOWN'}"


@dataclass(frozen=True)
class Length(Cond):
    """``field LENGTH [OP] n`` (number of entries of a list field)."""

    field: str
    op: str
    n: int

    def __str__(self) -> str:
        return f"{self.field} LENGTH {self.op} {self.n}"


@dataclass(frozen=True)
class And(Cond):
    items: tuple[Cond, ...]

    def __str__(self) -> str:
        return " AND ".join(_wrap(i, Or) for i in self.items)


@dataclass(frozen=True)
class Or(Cond):
    items: tuple[Cond, ...]

    def __str__(self) -> str:
        return " OR ".join(str(i) for i in self.items)


@dataclass(frozen=True)
class Not(Cond):
    item: Cond

    def __str__(self) -> str:
        return "NOT " + _wrap(self.item, (And, Or, Not))


def all_of(items) -> Cond:
    """``items`` AND'ed, nested ANDs spliced in (one flat level)."""
    items = tuple(x for i in items for x in _items(_cond(i), And))
    return items[0] if len(items) == 1 else And(items)


def any_of(items) -> Cond:
    """``items`` OR'ed, nested ORs spliced in (one flat level)."""
    items = tuple(x for i in items for x in _items(_cond(i), Or))
    return items[0] if len(items) == 1 else Or(items)


def negate(item: Cond) -> Cond:
    """``NOT item``; ``NOT NOT x`` is ``x`` (filters are two-valued)."""
    return item.item if isinstance(item, Not) else Not(item)


def pushed_in(node: Cond, negated: bool = False) -> Cond:
    """``node`` with every NOT moved onto a condition (De Morgan; filters are two-valued),
    and AND/OR levels that become alike merged: ``NOT (a AND NOT (b OR c))`` is
    ``NOT a OR b OR c``. Never deeper than ``node``, so it recurses at most
    :data:`MAX_DEPTH` levels once the size is checked."""
    while isinstance(node, Not):  # a loop: only AND/OR levels recurse
        node, negated = node.item, not negated
    if isinstance(node, And | Or):
        items = [pushed_in(i, negated) for i in node.items]
        return any_of(items) if isinstance(node, And) == negated else all_of(items)
    return Not(node) if negated else node


def measure(node: Cond) -> tuple[int, int]:
    """(depth, terms): nested AND/OR levels (a NOT adds none: pushed onto the conditions,
    it merges with the levels around it), and conditions (each value of a HAS list counts).
    Walked with a list, not recursion, so any tree can be measured."""
    depth = terms = 0
    todo = [(node, 0)]
    while todo:
        n, d = todo.pop()
        if isinstance(n, And | Or):
            todo.extend((i, d + 1) for i in n.items)
        elif isinstance(n, Not):
            todo.append((n.item, d))
        else:
            depth = max(depth, d)
            terms += len(n.values) if isinstance(n, Has) else 1
    return depth, terms


def check_size(node: Cond) -> Cond:
    """``node`` unchanged if within :data:`MAX_DEPTH` and :data:`MAX_TERMS`, else BadInput."""
    depth, terms = measure(node)
    if depth > MAX_DEPTH:
        raise depth_error(depth)
    if terms > MAX_TERMS:
        raise terms_error(terms)
    return node


def depth_error(depth: int) -> BadInput:
    return BadInput(f"filter nests {depth} levels deep (parentheses, or AND inside OR inside "
                    f"AND...); the limit is {MAX_DEPTH}")


def terms_error(terms: int) -> BadInput:
    return BadInput(f"filter has {terms} conditions (each HAS value counts); the limit is "
                    f"{MAX_TERMS}: use HAS ANY lists or split the query")


def _wrap(c: Cond, kinds) -> str:
    return f"({c})" if isinstance(c, kinds) else str(c)


# ------------------------------------------------------------------------ builders
def make_cmp(name: str, op: str, value, pos=None) -> Cond:
    return Cmp(name, op, check_op(name, "cmp", value, pos, op=op))


def make_fuzzy(name: str, op: str, value, pos=None) -> Cond:
    return Fuzzy(name, op, check_op(name, "fuzzy", value, pos, op=op))


def make_has(name: str, mode: str, values, pos=None) -> Cond:
    return Has(name, mode, check_has(name, mode, tuple(values), pos))


def make_known(name: str, known: bool, pos=None) -> Cond:
    check_op(name, "known", None, pos)
    return Known(name, known)


def make_length(name: str, op: str, n, pos=None) -> Cond:
    return Length(name, op, check_op(name, "length", n, pos, op=op))


def flip(op: str) -> str:
    """The operator with its sides swapped: ``3 < nsites`` is ``nsites > 3``."""
    return _FLIP[op]


@dataclass(frozen=True, eq=False)
class Field:
    """One field in the builder: ``Q.nsites <= 12``, ``Q.elements.has_all("C", "N")``."""

    name: str
    _spec: object = field(repr=False, default=None)

    __hash__ = None  # == builds a filter

    def __eq__(self, v):  # type: ignore[override]
        return make_cmp(self.name, "=", v)

    def __ne__(self, v):  # type: ignore[override]
        return make_cmp(self.name, "!=", v)

    def __lt__(self, v):
        return make_cmp(self.name, "<", v)

    def __le__(self, v):
        return make_cmp(self.name, "<=", v)

    def __gt__(self, v):
        return make_cmp(self.name, ">", v)

    def __ge__(self, v):
        return make_cmp(self.name, ">=", v)

    def has(self, value) -> Cond:
        return make_has(self.name, "", (value,))

    def has_all(self, *values) -> Cond:
        return make_has(self.name, "ALL", values)

    def has_any(self, *values) -> Cond:
        return make_has(self.name, "ANY", values)

    def has_only(self, *values) -> Cond:
        return make_has(self.name, "ONLY", values)

    def contains(self, text: str) -> Cond:
        return make_fuzzy(self.name, "CONTAINS", text)

    def startswith(self, text: str) -> Cond:
        return make_fuzzy(self.name, "STARTS WITH", text)

    def endswith(self, text: str) -> Cond:
        return make_fuzzy(self.name, "ENDS WITH", text)

    def known(self) -> Cond:
        return make_known(self.name, True)

    def unknown(self) -> Cond:
        return make_known(self.name, False)

    def length(self, n: int, op: str = "=") -> Cond:
        return make_length(self.name, op, n)


class _Builder:
    """``Q.<field>`` or ``Q["<field>"]`` starts a filter; ``Q.all()`` matches everything."""

    def __getattr__(self, name: str) -> Field:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Field:
        from .fields import unknown_field

        if name not in FIELDS:
            raise unknown_field(name, None)
        return Field(name)

    @staticmethod
    def all() -> Cond:
        return Everything()

    def __dir__(self):
        return list(FIELDS)


Q = _Builder()
