"""The fields a filter may use, their types and the operators each accepts.

Validation lives here so the text parser and the Python builder refuse the same things with
the same messages (the parser adds the line and column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import BadInput

CMP_OPS = ("=", "!=", "<", "<=", ">", ">=")
EQ_OPS = ("=", "!=")


@dataclass(frozen=True)
class FieldSpec:
    """A filter field: value type, accepted operations, description."""

    name: str
    type: str  # int, float, str, time, id, elements, levels, dataset, run
    ops: frozenset[str]  # cmp, fuzzy, has, known, length
    description: str
    cmp_ops: tuple[str, ...] = CMP_OPS
    has_modes: tuple[str, ...] = ("", "ALL", "ANY", "ONLY")
    needs_level: bool = False


def _f(name, type_, ops, description, **kw) -> FieldSpec:
    return FieldSpec(name, type_, frozenset(ops.split()), description, **kw)


RATIO_TOLERANCE = 1e-3
"""``elements_ratios HAS x`` matches an element whose atom fraction is within this of x
(OPTIMADE leaves float equality to the implementation; 1e-3 lets 0.333 match 1/3)."""

_SPECS = [
    _f("elements", "elements", "has length known",
       "element symbols present: HAS, HAS ALL, HAS ANY, HAS ONLY, LENGTH"),
    _f("nelements", "int", "cmp known", "number of distinct elements"),
    _f("nsites", "int", "cmp known", "number of atoms"),
    _f("chemical_formula_reduced", "str", "cmp fuzzy known",
       "reduced formula, elements alphabetical (e.g. H2O, CH4)"),
    _f("chemical_formula_hill", "str", "cmp fuzzy known", "Hill formula of the structure"),
    _f("chemical_formula_anonymous", "str", "cmp fuzzy known",
       "anonymous formula (e.g. A2B)"),
    _f("chemical_formula_descriptive", "str", "cmp fuzzy known",
       "formula as the source gave it (info key chemical_formula_descriptive), else the Hill "
       "formula"),
    _f("elements_ratios", "ratios", "has length known",
       "atom fraction of each element, in the order of elements: HAS x (x within "
       f"{RATIO_TOLERANCE} of an element's fraction), HAS ALL, HAS ANY, HAS ONLY, LENGTH"),
    _f("species_at_sites", "elements", "has length known",
       "the species (element symbol) of each site: HAS, HAS ALL, HAS ANY, HAS ONLY, LENGTH "
       "(= nsites)"),
    _f("cartesian_site_positions", "positions", "length known",
       "site positions (Å): LENGTH (= nsites), IS KNOWN"),
    _f("lattice_vectors", "cell", "length known",
       "the cell's three vectors: IS KNOWN when the structure has a cell, LENGTH 3"),
    _f("dimension_types", "dimtypes", "has length known",
       "periodicity per cell direction (0 or 1, three values): HAS 1 = at least one periodic "
       "direction, HAS ONLY 0 = a molecule, HAS ONLY 1 = periodic in 3-D"),
    _f("structure_features", "features", "has length known",
       "always the empty list: the registry stores no disorder, partial occupancy or "
       "assemblies"),
    _f("nperiodic_dimensions", "int", "cmp known", "number of periodic directions (0-3)"),
    _f("id", "id", "cmp fuzzy known",
       "structure identity hash (string) or numeric row id (number)"),
    _f("last_modified", "time", "cmp known", "time the structure was stored (ISO 8601, UTC)"),
    _f("_nnp_levels", "levels", "has known",
       "levels of theory with an ok label: HAS, HAS ALL, HAS ANY, HAS ONLY"),
    _f("_nnp_energy", "float", "cmp known", "energy (eV) at the chosen level",
       needs_level=True),
    _f("_nnp_energy_per_atom", "float", "cmp known",
       "energy per atom (eV) at the chosen level, minus atomic reference energies when "
       "the level has them", needs_level=True),
    _f("_nnp_max_force", "float", "cmp known",
       "largest per-atom force norm (eV/Å) at the chosen level", needs_level=True),
    _f("_nnp_source", "str", "cmp fuzzy known", "source the structure was ingested from"),
    _f("_nnp_dataset", "dataset", "cmp has known",
       'member of a dataset version: = "name:3", = "name@alias" or HAS ANY ...',
       cmp_ops=EQ_OPS, has_modes=("", "ALL", "ANY")),
    _f("_nnp_run", "run", "cmp has known",
       "made by run N (the structure or one of its labels)", cmp_ops=EQ_OPS,
       has_modes=("", "ANY")),
]

FIELDS: dict[str, FieldSpec] = {s.name: s for s in _SPECS}
"""Every field a filter may use, by name (iterate for the names)."""

_OP_WORDS = {"cmp": "comparison", "fuzzy": "CONTAINS/STARTS WITH/ENDS WITH", "has": "HAS",
             "known": "IS KNOWN/IS UNKNOWN", "length": "LENGTH"}


def at(pos) -> str:
    return f" at line {pos[0]}, column {pos[1]}" if pos else ""


def field_list() -> str:
    return ", ".join(FIELDS)


def unknown_field(name: str, pos) -> BadInput:
    return BadInput(f"unknown field {name!r}{at(pos)}; valid fields: {field_list()}")


def spec_of(name: str, pos=None) -> FieldSpec:
    spec = FIELDS.get(name)
    if spec is None:
        raise unknown_field(name, pos)
    return spec


def _typed(spec: FieldSpec, value, pos, fuzzy: bool = False):
    """``value`` checked (and normalised) against the field's type."""
    t = spec.type
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL refuses such text
        raise BadInput(f"{spec.name}: the string {value[:40]!r} contains a NUL "
                       f"character{at(pos)}")
    if fuzzy or t in ("str", "elements", "levels", "dataset", "time", "features"):
        if not isinstance(value, str):
            raise BadInput(f"{spec.name} needs a string value, got {value!r}{at(pos)}")
    elif t in ("int", "run", "dimtypes"):
        if not is_num or (isinstance(value, float) and not value.is_integer()):
            raise BadInput(f"{spec.name} needs an integer, got {value!r}{at(pos)}")
        return int(value)
    elif t in ("float", "ratios"):
        if not is_num:
            raise BadInput(f"{spec.name} needs a number, got {value!r}{at(pos)}")
        if isinstance(value, float) and math.isnan(value):  # SQLite binds NaN as NULL
            raise BadInput(f"{spec.name} needs a number, got NaN{at(pos)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float: compares as the infinity
            return math.inf if value > 0 else -math.inf
    elif t == "id":
        if not (isinstance(value, str | int) and not isinstance(value, bool)
                or (is_num and value.is_integer())):
            raise BadInput(f"id needs a hash string or an integer, got {value!r}{at(pos)}")
        return value if isinstance(value, str) else int(value)
    if t == "time" and not fuzzy:
        return parse_time(value, pos).isoformat()
    if t == "elements":
        from ..chem.elements import symbol_to_z

        try:
            symbol_to_z(value)
        except BadInput:
            raise BadInput(f"unknown element {value!r}{at(pos)}") from None
    if t == "levels":
        from ..store.levels import canonical_name

        return canonical_name(value)
    if t == "dataset":
        from ..store.refs import parse_ref

        parse_ref(value)
    return value


def parse_time(text: str, pos=None) -> datetime:
    """An ISO 8601 time; naive times are UTC."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 moved before year 1 by UTC
        raise BadInput(f"last_modified needs an ISO 8601 time between years 1 and 9999, "
                       f"got {text[:40]!r}{at(pos)}") from None


def check_op(name: str, kind: str, value, pos, op: str | None = None):
    """Refuse an operation the field does not support; return the normalised value."""
    spec = spec_of(name, pos)
    if kind not in spec.ops:
        allowed = ", ".join(_OP_WORDS[k] for k in sorted(spec.ops))
        raise BadInput(f"{_OP_WORDS[kind]} is not supported on {name}{at(pos)}; "
                       f"{name} supports: {allowed}")
    if kind == "cmp" and op not in spec.cmp_ops:
        raise BadInput(f"operator {op} is not supported on {name}{at(pos)}; "
                       f"use one of {' '.join(spec.cmp_ops)}")
    if kind == "length":
        if op not in CMP_OPS:
            raise BadInput(f"bad LENGTH operator {op!r}{at(pos)}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadInput(f"LENGTH needs an integer{at(pos)}")
        return value
    if kind == "known":
        return None
    if kind == "cmp" and spec.type == "elements":
        raise BadInput(f"use HAS with {name}{at(pos)}")
    return _typed(spec, value, pos, fuzzy=(kind == "fuzzy"))


def check_has(name: str, mode: str, values: tuple, pos) -> tuple:
    spec = spec_of(name, pos)
    if "has" not in spec.ops:
        check_op(name, "has", None, pos)  # raises with the list of supported operations
    if mode not in spec.has_modes:
        shown = ", ".join(("HAS " + m).strip() for m in spec.has_modes)
        raise BadInput(f"HAS {mode} is not supported on {name}{at(pos)}; use {shown}")
    if not values:
        raise BadInput(f"HAS {mode} on {name} needs at least one value{at(pos)}")
    return tuple(_typed(spec, v, pos) for v in values)
