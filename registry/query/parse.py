"""OPTIMADE filter text -> :mod:`registry.query.ast` nodes.

Parsing uses the ``optimade`` package's Lark grammar as a LALR(1) parser whose tables are kept on
disk (:mod:`.grammar`); the tree is turned into our nodes by the transformer below (optimade's
own MongoDB/Elastic transformers are not used).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from lark import Token
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from ..errors import BadInput
from . import ast
from .fields import at, field_list
from .grammar import parser

_ESC = re.compile(r'\\(["\\])')


class _Prop(NamedTuple):
    name: str
    pos: tuple[int, int]


def _int(tok) -> int:
    # Python refuses to convert text of more than ~4300 digits; far beyond any column anyway.
    if len(tok.lstrip("+-")) > 1000:
        raise BadInput(f"number {str(tok)[:20]}... at line {tok.line}, column {tok.column} "
                       f"has {len(tok)} digits; numbers have at most 1000")
    return int(tok)


class _ToAst(Transformer_NonRecursive):
    """Bottom-up: values to Python values, properties to names, comparisons to nodes.
    Iterative (not recursive), so deep nesting cannot exhaust the Python stack."""

    # ---- values
    def string(self, c):
        return _ESC.sub(r"\1", c[0][1:-1])

    def number(self, c):
        tok = c[0]
        return _int(tok) if tok.type == "SIGNED_INT" else float(tok)

    def signed_int(self, c):
        return _int(c[0])

    def bool(self, c):
        raise BadInput("boolean values (TRUE/FALSE) are not supported by any field")

    def property(self, c):
        name = c[0]
        if len(c) > 1:
            raise BadInput(f"nested property {'.'.join(c)!r}{at(_pos(name))} is not supported; "
                           f"valid fields: {field_list()}")
        return _Prop(str(name), _pos(name))

    def value(self, c):
        return c[0]

    constant = non_string_value = value

    def not_implemented_string(self, c):
        return c[0]

    def value_list(self, c):
        if any(isinstance(x, Token) and x.type == "OPERATOR" for x in c):
            raise BadInput("operators inside HAS value lists are not supported")
        return tuple(c)

    # ---- right-hand sides: (kind, ...) tuples
    def value_op_rhs(self, c):
        return ("cmp", str(c[0]), c[1])

    def known_op_rhs(self, c):
        return ("known", c[1].type == "KNOWN")

    def fuzzy_string_op_rhs(self, c):
        word = {"CONTAINS": "CONTAINS", "STARTS": "STARTS WITH", "ENDS": "ENDS WITH"}
        return ("fuzzy", word[c[0].type], c[-1])

    def set_op_rhs(self, c):
        if len(c) == 2:
            return ("has", "", (c[1],))
        if c[1].type == "OPERATOR":
            raise BadInput(f"HAS with an operator (HAS {c[1]} ...) is not supported")
        return ("has", c[1].type, c[2])

    def length_op_rhs(self, c):
        op = str(c[1]) if len(c) == 3 else "="
        return ("length", op, c[-1])

    def set_zip_op_rhs(self, c):
        raise BadInput("zipped HAS (a:b HAS ...) is not supported")

    # ---- comparisons
    def property_first_comparison(self, c):
        prop, rhs = c
        _no_property_value(rhs[-1], prop)
        kind = rhs[0]
        if kind == "cmp":
            return ast.make_cmp(prop.name, rhs[1], rhs[2], prop.pos)
        if kind == "fuzzy":
            return ast.make_fuzzy(prop.name, rhs[1], rhs[2], prop.pos)
        if kind == "has":
            for v in rhs[2]:
                _no_property_value(v, prop)
            return ast.make_has(prop.name, rhs[1], rhs[2], prop.pos)
        if kind == "known":
            return ast.make_known(prop.name, rhs[1], prop.pos)
        return ast.make_length(prop.name, rhs[1], rhs[2], prop.pos)

    def constant_first_comparison(self, c):
        const, op, prop = c
        if not isinstance(prop, _Prop):
            raise BadInput(f"comparison of two constants ({const!r} {op} {prop!r}) "
                           "is not supported")
        return ast.make_cmp(prop.name, ast.flip(str(op)), const, prop.pos)

    def comparison(self, c):
        return c[0]

    # ---- boolean structure
    def expression_phrase(self, c):
        return ast.negate(c[1]) if len(c) == 2 else c[0]

    def expression_clause(self, c):
        return ast.all_of(c)

    def expression(self, c):
        return ast.any_of(c)

    def filter(self, c):
        return c[0] if c else ast.Everything()


def _pos(tok: Token) -> tuple[int, int]:
    return (tok.line, tok.column)


def _no_property_value(v, prop: _Prop) -> None:
    if isinstance(v, _Prop):
        raise BadInput(f"comparing field {prop.name} with field {v.name}{at(prop.pos)} "
                       "is not supported; compare with a constant")


def _syntax_error(text: str, exc: UnexpectedInput) -> BadInput:
    line, col = exc.line, exc.column
    at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    if isinstance(exc, UnexpectedEOF) or at_end or line is None or line < 0:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        what = "unexpected end of filter"
    elif isinstance(exc, UnexpectedCharacters):
        what = f"unexpected character {text[exc.pos_in_stream]!r}"
    else:
        tok = getattr(exc, "token", None)
        what = f"unexpected {str(tok)!r}" if tok is not None and str(tok) else "unexpected input"
    context = exc.get_context(text).rstrip("\n") if line == exc.line and not at_end else ""
    msg = f"filter syntax error at line {line}, column {col}: {what}"
    if context:
        msg += "\n" + context
    return BadInput(msg + f"\nvalid fields: {field_list()}")


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|\(|\)|,|\bAND\b|\bOR\b')


def _check_text_size(text: str) -> None:
    """Refuse a filter nested or wide beyond the limits before parsing it: the parser's time
    grows with the size, and a refusal should not wait for it. Counts parentheses, AND/OR
    and list commas outside strings (the parsed tree is measured again, exactly)."""
    depth = deepest = 0
    terms = 1
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif tok == ")":
            depth -= 1
        elif tok in ("AND", "OR", ","):
            terms += 1
    if deepest > ast.MAX_DEPTH:
        raise ast.depth_error(deepest)
    if terms > ast.MAX_TERMS:
        raise ast.terms_error(terms)


def parse(text: str) -> ast.Cond:
    """Parse OPTIMADE filter text into a filter expression (``""`` matches everything).

    Results are cached by text (the nodes are immutable): parsing takes a millisecond or so,
    a repeated filter then costs nothing to parse. Filters
    beyond :data:`~registry.query.ast.MAX_DEPTH` or ``MAX_TERMS`` are refused (BadInput).
    """
    if not isinstance(text, str):
        raise BadInput(f"a filter must be text, got {type(text).__name__}")
    return _parse_cached(text)


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> ast.Cond:
    _check_text_size(text)
    try:  # Lark's errors carry line and column
        tree = parser().parse(text) if text.strip() else None
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    except RecursionError:  # last resort: the limits above should keep the parser shallow
        raise BadInput(f"filter is nested too deeply to parse; the limit is {ast.MAX_DEPTH} "
                       "levels") from None
    if tree is None:
        return ast.Everything()
    try:
        return ast.check_size(_ToAst().transform(tree))
    except VisitError as exc:
        if isinstance(exc.orig_exc, BadInput):
            raise exc.orig_exc from None
        raise
    except RecursionError:
        raise BadInput(f"filter is nested too deeply to parse; the limit is {ast.MAX_DEPTH} "
                       "levels") from None
