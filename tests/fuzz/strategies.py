"""Hypothesis strategies shared by the fuzz tests: OPTIMADE filter text from the grammar, and
the awkward values users type (huge and negative numbers, empty and long strings, unicode,
SQL-looking text)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from registry.query import FIELDS

# ------------------------------------------------------------------------------ values
HUGE_INTS = [0, 1, -1, 2, 3, 5, 12, 2**15 - 1, 2**15, 2**31 - 1, 2**31, -2**31 - 1, 2**53 + 1,
             2**63 - 1, 2**63, -2**63, -2**63 - 1, 3_000_000_000, 10**30, -10**30, 10**400]
FLOAT_TEXTS = ["0.0", "-0.0", "1.5", "-2.25", "1e308", "-1e308", "1.7976931348623157e308",
               "1e309", "-1e999", "5e-324", "1e-400", ".5", "1.", "6.02e23", "-100.0",
               "-1e+30", "1E5"]
SQLISH = ["' OR 1=1 --", "\"; DROP TABLE structures; --", "x'); DELETE FROM labels; --",
          "%", "_", "\\", "%' OR '%'='", "NULL", "*"]
WORDS = ["", " ", "pbe", "PBE", "wb97x/6-31g*", "d1", "d1:1", "d1:2", "d1@latest",
         "d1@production", "d1:0", "d1:-1", "d1:99999999999999999999999", "nosuch",
         "nosuch:1", "bad:name:x", "H2O", "CH4", "Cu4", "H", "C", "O", "Cu", "Xx", "A2B",
         "AB", "2000-01-01", "2999-12-31T00:00:00Z", "1900-01-01T00:00:00+05:00",
         "2024-13-45", "not a time", "0", "a", "ff", "fuzz", "x" * 300, "名前", "é", "\t",
         "☃" * 3, *SQLISH]


def escaped(text: str) -> str:
    """``text`` as an OPTIMADE string literal (double quotes, backslash escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ints():
    return st.one_of(st.integers(-20, 20), st.sampled_from(HUGE_INTS),
                     st.integers(-2**70, 2**70))


def int_texts():
    near_limit = st.sampled_from([999, 1000, 1001, 4301]).map(lambda n: "9" * n)  # digits
    return st.one_of(*[ints().map(str)] * 6, near_limit)


def float_texts():
    return st.one_of(
        st.sampled_from(FLOAT_TEXTS),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )


def free_text(max_size=12):
    # No surrogates (not encodable); NUL included: the Python API can be handed anything
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


def string_literals():
    return st.one_of(st.sampled_from(WORDS), free_text()).map(escaped)


def literals():
    """A value of any type: the field decides whether it fits."""
    return st.one_of(string_literals(), int_texts(), float_texts())


# ------------------------------------------------------------------------------ filters
FIELD_NAMES = list(FIELDS)
BAD_FIELDS = ["foo", "nsites.x", "_nnp_nosuch", "NSITES", "species", "chemical"]
CMP = ["=", "!=", "<", "<=", ">", ">="]


def _value_for(name: str):
    """Mostly a value of the field's own type, sometimes any value."""
    t = FIELDS[name].type if name in FIELDS else "str"
    typed = {
        "int": int_texts(), "run": int_texts(),
        "float": st.one_of(float_texts(), int_texts()),
        "id": st.one_of(int_texts(), string_literals()),
        "time": st.sampled_from(["2000-01-01", "2999-12-31T00:00:00Z", "1970-01-01T00:00:00",
                                 "2024-13-45", "garbage", "", "1900-01-01T00:00:00+05:00"]
                                ).map(escaped),
        "elements": st.sampled_from(["H", "C", "N", "O", "Cu", "Xx", "h", "", "Uuo", "Og"]
                                    ).map(escaped),
        "ratios": st.one_of(float_texts(), int_texts()),
        "dimtypes": int_texts(),
        "levels": st.sampled_from(["pbe", "PBE", "wb97x/6-31g*", "nosuch", "", " pbe "]
                                  ).map(escaped),
        "dataset": st.sampled_from(["d1", "d1:1", "d1:2", "d1@latest", "d1@nosuch", "nosuch",
                                    "d1:0", "d1:99999999999999999999999", "bad:x:y", ""]
                                   ).map(escaped),
    }.get(t, string_literals())
    return st.one_of(typed, typed, typed, literals())


@st.composite
def conditions(draw) -> str:
    """One condition: ``field OP value``, ``value OP field``, fuzzy, HAS, LENGTH, KNOWN."""
    name = draw(st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(FIELD_NAMES),
                          st.sampled_from(FIELD_NAMES), st.sampled_from(BAD_FIELDS)))
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "rcmp", "fuzzy", "has", "length",
                                 "known"]))
    if kind == "cmp":
        return f"{name} {draw(st.sampled_from(CMP))} {draw(_value_for(name))}"
    if kind == "rcmp":
        return f"{draw(_value_for(name))} {draw(st.sampled_from(CMP))} {name}"
    if kind == "fuzzy":
        op = draw(st.sampled_from(["CONTAINS", "STARTS WITH", "STARTS", "ENDS WITH", "ENDS"]))
        return f"{name} {op} {draw(_value_for(name))}"
    if kind == "has":
        mode = draw(st.sampled_from(["", "ALL ", "ANY ", "ONLY "]))
        values = draw(st.lists(_value_for(name), min_size=1, max_size=6))
        return f"{name} HAS {mode}" + ", ".join(values)
    if kind == "length":
        op = draw(st.sampled_from(["", *[o + " " for o in CMP]]))
        return f"{name} LENGTH {op}{draw(int_texts())}"
    return f"{name} IS {draw(st.sampled_from(['KNOWN', 'UNKNOWN']))}"


VALID_VALUES = {
    "int": st.one_of(st.integers(-2, 40).map(str), st.sampled_from(HUGE_INTS).map(str)),
    "run": st.one_of(st.integers(0, 12).map(str), st.sampled_from([str(2**31), str(10**23)])),
    "float": st.one_of(st.floats(-2000, 50, allow_nan=False).map(repr), st.integers(-3000, 5)
                       .map(str), st.sampled_from(FLOAT_TEXTS)),
    "id": st.one_of(st.integers(-1, 20).map(str), st.sampled_from(["0", "a", "ff", "1234"])
                    .map(escaped), st.sampled_from(HUGE_INTS).map(str)),
    "time": st.sampled_from(["2000-01-01", "2999-12-31T00:00:00Z", "1970-01-01T00:00:00",
                             "1900-01-01T00:00:00+05:00"]).map(escaped),
    "elements": st.sampled_from(["H", "C", "N", "O", "Cu", "He", "Og"]).map(escaped),
    "levels": st.sampled_from(["pbe", "PBE", "wb97x/6-31g*"]).map(escaped),
    "dataset": st.sampled_from(["d1", "d1:1", "d1:2", "d1@latest", "d1@production"])
    .map(escaped),
    "ratios": st.one_of(st.sampled_from(["0.5", "0.25", "0.333", "1", "0", "0.2"]),
                        st.floats(0, 1).map(repr)),
    "dimtypes": st.sampled_from(["0", "1", "2", "-1"]),
    "features": st.sampled_from(["disorder", "assemblies", ""]).map(escaped),
    "str": st.one_of(st.sampled_from(["H2O", "CH4", "Cu4", "H", "A2B", "AB", "A", "C", "2",
                                      "mols.xyz", "cu.xyz", "xyz", ".", "' OR 1=1 --", "%",
                                      "_", "\\", ""]), free_text(4)).map(escaped),
}


@st.composite
def valid_conditions(draw) -> str:
    """A condition the field accepts: one of its operators and a value of its type."""
    name = draw(st.sampled_from(FIELD_NAMES))
    spec = FIELDS[name]
    kind = draw(st.sampled_from(sorted(spec.ops)))
    value = VALID_VALUES.get(spec.type)  # None: a field with no values (LENGTH, IS KNOWN)
    if kind == "cmp":
        op = draw(st.sampled_from(spec.cmp_ops))
        if spec.type == "id" and op not in ("=", "!="):
            value = VALID_VALUES["int"]
        v = draw(value)
        return f"{v} {op} {name}" if draw(st.booleans()) else f"{name} {op} {v}"
    if kind == "fuzzy":
        op = draw(st.sampled_from(["CONTAINS", "STARTS WITH", "STARTS", "ENDS WITH", "ENDS"]))
        return f"{name} {op} {draw(VALID_VALUES['str'])}"
    if kind == "has":
        mode = draw(st.sampled_from(spec.has_modes))
        n = 1 if not mode else draw(st.integers(1, 4))
        vals = draw(st.lists(value, min_size=n, max_size=n))
        return f"{name} HAS {mode + ' ' if mode else ''}" + ", ".join(vals)
    if kind == "length":
        op = draw(st.sampled_from(["", *[o + " " for o in CMP]]))
        return f"{name} LENGTH {op}{draw(st.integers(0, 5))}"
    return f"{name} IS {draw(st.sampled_from(['KNOWN', 'UNKNOWN']))}"


def _combine(children):
    return st.one_of(
        # the grammar has no NOT NOT: a NOT'ed expression gets parentheses
        children.map(lambda c: f"NOT ({c})" if c.startswith("NOT") else f"NOT {c}"),
        children.map(lambda c: f"({c})"),
        st.tuples(children, st.sampled_from(["AND", "OR"]), children)
        .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(st.lists(children, min_size=2, max_size=8), st.sampled_from(["AND", "OR"]))
        .map(lambda t: "(" + f" {t[1]} ".join(t[0]) + ")"),
    )


@st.composite
def deep(draw) -> str:
    """A condition nested ``n`` parentheses deep (or under ``n`` NOTs), n around the limit
    of 64 and far beyond it."""
    n = draw(st.one_of(st.integers(1, 70), st.sampled_from([63, 64, 65, 100, 200, 5000])))
    c = draw(conditions())
    style = draw(st.sampled_from(["parens", "not", "alternate", "and-nest"]))
    if style == "parens":
        return "(" * n + c + ")" * n
    if style == "not":
        return "NOT " * n + c
    if style == "alternate":  # AND inside OR inside AND ...
        text = c
        for k in range(n):
            text = f"({text} {'AND' if k % 2 else 'OR'} nsites > {k})"
        return text
    return "NOT (" * n + c + ")" * n


@st.composite
def wide(draw) -> str:
    """Long AND/OR lists: equalities on one field (sent as IN lists), mixed conditions, long
    HAS lists; sizes around small numbers, with a few beyond the limit of 1000 terms (refused
    before parsing, so they cost nothing)."""
    n = draw(st.one_of(st.integers(2, 60), st.sampled_from([1001, 1500, 20000])))
    op = draw(st.sampled_from(["OR", "AND"]))
    style = draw(st.sampled_from(["eq", "mixed", "has"]))
    if style == "eq":
        name = draw(st.sampled_from(["id", "nsites", "_nnp_run", "chemical_formula_reduced",
                                     "nelements"]))
        if name == "chemical_formula_reduced":
            vals = [escaped(f"H{k}") for k in range(n)]
        else:
            vals = [str(k) for k in range(n)]
        neg = draw(st.booleans())
        return f" {op} ".join(("NOT " if neg else "") + f"{name} = {v}" for v in vals)
    if style == "has":
        name = draw(st.sampled_from(["elements", "_nnp_levels"]))
        vals = ["H", "C", "O", "N", "Cu"] if name == "elements" else ["pbe", "wb97x/6-31g*"]
        mode = draw(st.sampled_from(["ALL", "ANY", "ONLY"]))
        return f"{name} HAS {mode} " + ", ".join(escaped(vals[k % len(vals)]) for k in range(n))
    base = draw(st.lists(conditions(), min_size=1, max_size=4))
    return f" {op} ".join(f"({base[k % len(base)]})" for k in range(n))


def filters():
    """Filter text: half valid filters from the grammar (nested and combined); half filters
    with any field, operator and value, deep, wide, or any text at all."""
    valid = st.recursive(valid_conditions(), _combine, max_leaves=10)
    anything = st.recursive(conditions(), _combine, max_leaves=6)
    odd = st.sampled_from(["", "   ", "()", "NOT", "AND", "nsites", "nsites =", "nsites = = 1",
                           '"unterminated', "nsites = 1)", "(nsites = 1", "nsites=1 AND",
                           "elements HAS", "a.b.c = 1", "nsites = TRUE", "1 = 1", '"a" = "a"'])
    rest = st.one_of(anything, deep(), wide(), free_text(40), odd)
    return st.integers(0, 9).flatmap(lambda k: valid if k < 6 else rest)


def json_texts():
    return st.one_of(
        st.sampled_from(['{"a": 1}', "{}", "[]", "[", "null", '{"a": NaN}', '{"a": Infinity}',
                         "key=value", '"text"', "1e400", '{"a": 1e400}', "{" * 200]),
        st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)),
                        max_size=3).map(json.dumps),
    )
