"""Filter expressions -> SQLAlchemy Core boolean clauses over the ``structures`` table.

Every value becomes a bound parameter. Conditions on the composition (elements, ``nsites``,
``nelements``, formulas) are evaluated over ``compositions``, one row per distinct formula:
each maximal composition-only part of the filter (and all such conditions of an AND, merged)
becomes one ``composition_id IN (SELECT id FROM compositions WHERE ...)``, where element
conditions are bitwise tests on ``element_sets`` (``element_set_id IN ...``; the matching
sets bound as ids when a session is open) and element ratios ``EXISTS`` sub-queries on
``composition_elements``. A level (``_nnp_levels HAS``) in an AND with composition conditions
meets them in ``labels`` (index ``(level_id, composition_id, structure_id)``); other level
conditions are ``EXISTS`` sub-queries on ``labels`` (partial unique index ``(level_id,
structure_id) WHERE status = 'ok'``), and label values at ``level`` select ids from the
level's labels. Sub-queries are correlated to ``structures`` only, so the clause also works
in queries that join labels or dataset members themselves.

Wide and deep filters stay within what both backends accept (sizes: :mod:`.ast`): OR'd
equalities on one field become one ``IN`` list; long AND/OR lists are cut into parenthesised
groups of :data:`GROUP`, so SQLite's expression tree stays shallow; and in each AND/OR the
most deeply nested operand comes first, where SQLite's parser stack grows least. An integer
beyond its column's range compares as it would with any stored value (``nsites > 3e9`` is
false), rather than PostgreSQL failing to cast it and SQLite answering.
"""

from __future__ import annotations

import operator

from sqlalchemy import (
    Float,
    Integer,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.functions import FunctionElement

from ..chem.elements import element_mask, symbol_to_z
from ..errors import BadInput
from ..store.levels import canonical_name, level_row
from ..store.lookups import dataset_version
from ..store.refs import LATEST, int_range, parse_ref
from ..store.tables import (
    composition_elements,
    compositions,
    dataset_aliases,
    dataset_members,
    dataset_versions,
    datasets,
    element_sets,
    labels,
    levels_of_theory,
    reference_energies,
    structures,
)
from . import ast
from .fields import FIELDS, RATIO_TOLERANCE, parse_time

S = structures.c  # Core columns: the query path never imports the ORM
_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}
C = compositions.c
COLUMNS = {"nperiodic_dimensions": S.nperiodic, "last_modified": S.created_at,
           "_nnp_source": S.source,
           # the source's own formula when it gave one, else the Hill formula
           "chemical_formula_descriptive": func.coalesce(
               S.info["chemical_formula_descriptive"].as_string(),
               select(C.formula_hill).where(C.id == S.composition_id)
               .correlate(structures).scalar_subquery())}
# fields of the composition: compared inside ``composition_id IN (SELECT id ...)``
COMPOSITION = {
    "nelements": C.nelements, "nsites": C.n_atoms, "chemical_formula_reduced": C.formula_reduced,
    "chemical_formula_hill": C.formula_hill, "chemical_formula_anonymous": C.formula_anonymous,
}
# list fields of the composition: (HAS test, what LENGTH counts)
_LISTS = {"elements": C.nelements, "elements_ratios": C.nelements,
          "species_at_sites": C.n_atoms, "cartesian_site_positions": C.n_atoms}
_COMPOSITION_FIELDS = {*COMPOSITION, *_LISTS}
# list fields of the structure row whose length never varies (or is always 0)
_FIXED_LENGTH = {"dimension_types": 3, "lattice_vectors": 3, "structure_features": 0}
_NULLABLE = {"_nnp_source"}
# fields whose OR'd equalities (and HAS / HAS ANY values) merge into one IN list
_MERGE_EQ = {"id", "nperiodic_dimensions", "_nnp_source", "_nnp_dataset", "_nnp_run",
             *COMPOSITION}
_MERGE_HAS = {"elements", "_nnp_levels", "_nnp_dataset", "_nnp_run"}
GROUP = 32  # operands per AND/OR list before it is cut into parenthesised groups
SET_IDS = 1000  # element sets bound as an id list at most (beyond: a sub-query)


class _Group(Grouping):
    """Parentheses SQLAlchemy keeps: it splices a nested AND into an AND (and OR into OR),
    which would undo the grouping of :func:`_wide`."""

    inherit_cache = True
    operator = None


def _wide(op, clauses: list):
    """``op(*clauses)`` (``and_`` or ``or_``) as groups of at most :data:`GROUP` operands,
    so the expression tree SQLite builds (one level per operand) stays shallow."""
    while len(clauses) > GROUP:
        clauses = [_Group(op(*clauses[i:i + GROUP])) if len(clauses[i:i + GROUP]) > 1
                   else clauses[i] for i in range(0, len(clauses), GROUP)]
    return op(*clauses)


def _compare(col, op: str, v):
    """``col OP v``. An integer beyond an integer column's range compares as it does with
    every value the column holds: PostgreSQL would fail to cast the parameter to the column
    type, and SQLite to bind one beyond 64 bits."""
    if isinstance(v, int) and not isinstance(v, bool) and isinstance(col.type, Integer):
        lo, hi = int_range(col)
        if v > hi:
            holds = op in ("!=", "<", "<=")
        elif v < lo:
            holds = op in ("!=", ">", ">=")
        else:
            return _OPS[op](col, v)
        return col.isnot(None) if holds else false()
    return _OPS[op](col, v)


def _in_range(col, values) -> list:
    """The ``values`` an integer column can hold (the others equal no row)."""
    lo, hi = int_range(col)
    return [v for v in values if lo <= v <= hi]


def _one_of(col, values):
    """``col`` equals one of ``values`` (``=`` for one, ``IN`` for more, false for none)."""
    if isinstance(col.type, Integer):
        values = _in_range(col, values)
    if not values:
        return false()
    return col == values[0] if len(values) == 1 else col.in_(values)


def _depth(node: ast.Cond) -> int:
    """Nested AND/OR/NOT levels below ``node`` (bounded by ``ast.MAX_DEPTH`` once checked)."""
    if isinstance(node, ast.And | ast.Or):
        return 1 + max(_depth(i) for i in node.items)
    if isinstance(node, ast.Not):
        return 1 + _depth(node.item)
    return 0


def _merge_key(node: ast.Cond):
    """(field, kind) if ``node`` is "field equals one of these values" (else None)."""
    if isinstance(node, ast.Cmp) and node.op == "=" and node.field in _MERGE_EQ:
        return node.field, isinstance(node.value, str)
    if isinstance(node, ast.Has) and node.mode in ("", "ANY") and node.field in _MERGE_HAS:
        return node.field, isinstance(node.values[0], str)
    return None


def _merged(items, negated: bool = False) -> tuple[dict, list]:
    """({(field, kind): values}, the other items) of OR'd ``items`` (or, ``negated``, of
    AND'ed ``NOT item``s); values in order, once."""
    groups: dict = {}
    rest = []
    for i in items:
        if negated != isinstance(i, ast.Not):
            rest.append(i)
            continue
        key = _merge_key(i.item if negated else i)
        if key is None:
            rest.append(i)
            continue
        i = i.item if negated else i
        values = groups.setdefault(key, [])
        for v in (i.values if isinstance(i, ast.Has) else (i.value,)):
            if v not in values:
                values.append(v)
    return groups, rest


class strpos(FunctionElement):
    """1-based position of a substring, case-sensitive (``instr`` on SQLite)."""

    type = Integer()
    name = "strpos"
    inherit_cache = True


@compiles(strpos)
def _strpos(element, compiler, **kw):
    return f"strpos({compiler.process(element.clauses, **kw)})"


@compiles(strpos, "sqlite")
def _instr(element, compiler, **kw):
    return f"instr({compiler.process(element.clauses, **kw)})"


def _sub(*where):
    """``EXISTS (SELECT 1 ... WHERE ...)`` correlated to structures only."""
    return exists().where(*where).correlate(structures)


def _composition_only(node: ast.Cond) -> bool:
    """Whether ``node`` only tests the composition (a condition on ``compositions``)."""
    if isinstance(node, ast.And | ast.Or):
        return all(_composition_only(i) for i in node.items)
    if isinstance(node, ast.Not):
        return _composition_only(node.item)
    return getattr(node, "field", None) in _COMPOSITION_FIELDS


def _in_compositions(cond):
    """Structures whose composition satisfies ``cond`` (a condition on ``compositions``). Never
    correlated: the enclosing query may join ``compositions`` itself (formula columns)."""
    return S.composition_id.in_(select(C.id).where(cond).correlate(None))


def _fuzzy(col, op: str, v: str):
    if op == "CONTAINS":
        return strpos(col, v) > 0
    if op == "STARTS WITH":
        return func.substr(col, 1, len(v)) == v
    return func.substr(col, func.length(col) - len(v) + 1) == v


_LO_BITS = (1 << 63) - 1  # bits of mask_lo (Z 1-63; the sign bit is never set)
_HI_BITS = (1 << 55) - 1  # bits of mask_hi (Z 64-118)


def _has_all(lo: int, hi: int):
    """The element set holds every element of the masks (``lo``, ``hi``)."""
    E = element_sets.c
    return and_(*[col.bitwise_and(m) == m for col, m in ((E.mask_lo, lo), (E.mask_hi, hi))
                  if m])


def _elements(mode: str, zs, session=None):
    """The composition's elements include one of (mode "" / ANY), all of (ALL) or only
    (ONLY) the atomic numbers ``zs``: a bitwise test on the element sets, whose compositions
    the index ``(element_set_id, n_atoms, id)`` then yields. With a session the matching sets
    are looked up now and bound as ids (up to :data:`SET_IDS`), so the planner estimates
    their compositions from its statistics rather than guessing a bitwise test's
    selectivity."""
    E = element_sets.c
    lo, hi = element_mask(zs)
    if mode == "ALL":
        cond = _has_all(lo, hi)
    elif mode == "ONLY":
        cond = and_(E.mask_lo.bitwise_and(_LO_BITS ^ lo) == 0,
                    E.mask_hi.bitwise_and(_HI_BITS ^ hi) == 0)
    else:  # one test per element: the planner estimates "(mask & bit) = bit" as selective,
        # where "mask & bits <> 0" would look like nearly every row and win a full scan
        cond = _wide(or_, [_has_all(*element_mask([z])) for z in sorted(set(zs))])
    sets = select(E.id).where(cond).correlate(None)
    if session is not None:
        ids = session.scalars(sets.order_by(E.id).limit(SET_IDS + 1)).all()
        if len(ids) <= SET_IDS:
            return _one_of(C.element_set_id, ids)
    return C.element_set_id.in_(sets)


def _ratios(values, negate=False):
    """The composition has an element whose atom fraction is within the tolerance of one of
    ``values`` (negated: an element whose fraction is none of them). Compared as counts,
    ``|count - x·n| <= tol·n``, so no integer division happens in SQL."""
    ce = composition_elements.alias().c
    near = _wide(or_, [func.abs(ce.count - float(v) * C.n_atoms) <= RATIO_TOLERANCE * C.n_atoms
                       for v in values])
    return exists().where(ce.composition_id == C.id, not_(near) if negate else near) \
        .correlate(compositions)


def _dimension_types(values, negate=False):
    """``dimension_types`` (the three pbc flags) holds one of ``values`` (negated: holds a
    flag not among them). ``pbc`` is a 3-bit mask: a 1 is present unless the mask is 0, a 0
    unless it is 7."""
    present = {1: S.pbc != 0, 0: S.pbc != 7}
    wanted = {0, 1} - set(values) if negate else {0, 1} & set(values)
    return _wide(or_, [present[v] for v in sorted(wanted)]) if wanted else false()


class Compiler:
    """Compiles filter nodes; ``level`` serves the ``_nnp_energy``-like fields.

    With a ``session``, level and dataset names are looked up now (unknown ones raise
    :class:`NotFound`) and bound as ids; without one they become scalar sub-queries.
    """

    def __init__(self, level: str | None = None, session=None):
        from ..store.levels import canonical_name

        self.level = canonical_name(level) if level else None
        self.session = session
        # Set by root() when the whole filter is one level + composition meeting: the
        # matching structure ids as a select on labels alone (see :func:`_labelled_in`).
        self.id_select = None
        self._meeting = None

    def root(self, node: ast.Cond):
        """Compile a whole filter (see the module docstring); BadInput beyond the sizes of
        :mod:`.ast`. NOTs are pushed onto the conditions first: each nested ``NOT (...)``
        would cost SQLite's parser stack more than the AND/OR levels it can merge with."""
        clause = self(ast.pushed_in(ast.check_size(node)))
        if self._meeting is not None and clause is self._meeting[0]:
            self.id_select = self._meeting[1]
        return clause

    def __call__(self, node: ast.Cond):
        if not isinstance(node, ast.And | ast.Or) and _composition_only(node):
            return _in_compositions(self._composition(node))
        kind = type(node).__name__
        return getattr(self, "_" + kind.lower())(node)

    def _composition(self, node: ast.Cond):
        """``node`` (composition-only) as a condition on a ``compositions`` row."""
        if isinstance(node, ast.And):
            groups, rest = _merged(node.items, negated=True)
            merged = [not_(self._composition_in(f, vs)) for (f, _), vs in groups.items()]
            return _wide(and_, [self._composition(i) for i in _deepest_first(rest)] + merged)
        if isinstance(node, ast.Or):
            groups, rest = _merged(node.items)
            merged = [self._composition_in(f, vs) for (f, _), vs in groups.items()]
            return _wide(or_, [self._composition(i) for i in _deepest_first(rest)] + merged)
        if isinstance(node, ast.Not):
            return not_(self._composition(node.item))
        if isinstance(node, ast.Length):
            return _compare(_LISTS[node.field], node.op, node.n)
        if isinstance(node, ast.Has) and node.field == "elements_ratios":
            return self._set(node.mode, list(node.values), _ratios)
        if isinstance(node, ast.Has):
            return _elements(node.mode, [symbol_to_z(v) for v in node.values], self.session)
        if isinstance(node, ast.Known):
            expr = C.nelements > 0 if node.field in _LISTS else \
                COMPOSITION[node.field].isnot(None)
            return expr if node.known else not_(expr)
        if isinstance(node, ast.Fuzzy):
            return _fuzzy(COMPOSITION[node.field], node.op, node.value)
        return _compare(COMPOSITION[node.field], node.op, node.value)  # ast.Cmp

    def _composition_in(self, field: str, values: list):
        if field == "elements":
            return _elements("ANY", [symbol_to_z(v) for v in values], self.session)
        return _one_of(COMPOSITION[field], values)

    # ------------------------------------------------------------- boolean structure
    def _everything(self, node):
        return true()

    def _and(self, node):
        """The composition-only items go into one ``composition_id IN (...)``, and NOT'ed
        equalities on one field into one ``NOT IN`` list."""
        comp = [i for i in node.items if _composition_only(i)]
        groups, rest = _merged((i for i in node.items if not _composition_only(i)),
                               negated=True)
        parts = []
        if comp:
            cond = self._composition(comp[0] if len(comp) == 1 else ast.And(tuple(comp)))
            level = next((i for i in rest if _level_has(i)), None)
            if level is None:
                parts.append((max(map(_depth, comp)), _in_compositions(cond)))
            else:  # the level and the composition meet in labels
                rest = [i for i in rest if i is not level]
                ids = [self._level_id(v) for v in level.values]
                if level.mode == "ALL" and len(ids) > 1:
                    parts.append((0, self._set("ALL", ids[1:], self._labelled)))
                    ids = ids[:1]
                meeting, ids_select = _labelled_in(ids, cond)
                if not rest and not groups and len(parts) == 0:
                    self._meeting = (meeting, ids_select)
                    return meeting
                parts.append((max(map(_depth, comp)), meeting))
        parts += [(_depth(i), self(i)) for i in rest]
        parts += [(0, not_(self._one_of(f, is_text, vs)))
                  for (f, is_text), vs in groups.items()]
        return _wide(and_, _by_depth(parts))

    def _or(self, node):
        """Composition-only items go into one ``composition_id IN (...)`` and equalities on
        one field into one ``IN`` list."""
        comp = [i for i in node.items if _composition_only(i)]
        groups, rest = _merged(i for i in node.items if not _composition_only(i))
        parts = []
        if comp:
            parts.append((max(map(_depth, comp)), _in_compositions(
                self._composition(comp[0] if len(comp) == 1 else ast.Or(tuple(comp))))))
        parts += [(_depth(i), self(i)) for i in rest]
        parts += [(0, self._one_of(f, is_text, vs)) for (f, is_text), vs in groups.items()]
        return _wide(or_, _by_depth(parts))

    def _not(self, node):
        return not_(self(node.item))

    def _one_of(self, field: str, is_text: bool, values: list):
        """The structure's ``field`` equals one of ``values`` (OR'd equalities, merged)."""
        if field == "id":
            return _one_of(S.hash if is_text else S.id, values)
        if field == "_nnp_levels":
            return self._labelled([self._level_id(v) for v in values])
        if field == "_nnp_dataset":
            return self._member([self._version_id(v) for v in values])
        if field == "_nnp_run":
            return self._made_by(values)
        col = COLUMNS[field]
        expr = _one_of(col, values)
        return and_(col.isnot(None), expr) if field in _NULLABLE else expr

    # ------------------------------------------------------------------ comparisons
    def _cmp(self, node: ast.Cmp):
        f, op, v = node.field, _OPS[node.op], node.value
        if f in COLUMNS:
            col = COLUMNS[f]
            expr = _compare(col, node.op, parse_time(v) if f == "last_modified" else v)
            return and_(col.isnot(None), expr) if f in _NULLABLE else expr
        if f == "id":
            return _compare(S.hash if isinstance(v, str) else S.id, node.op, v)
        if FIELDS[f].needs_level:
            lab, value = self._level_value(f)
            return _labels_where(*lab, op(value, v))  # NULL compares as not true
        if f == "_nnp_dataset":
            member = self._member([self._version_id(v)])
            return member if node.op == "=" else not_(member)
        if f == "_nnp_run":
            made = self._made_by([v])
            return made if node.op == "=" else not_(made)
        raise AssertionError(f)  # pragma: no cover - fields.py refuses the rest

    def _fuzzy(self, node: ast.Fuzzy):
        col = S.hash if node.field == "id" else COLUMNS[node.field]
        expr = _fuzzy(col, node.op, node.value)
        return and_(col.isnot(None), expr) if node.field in _NULLABLE else expr

    def _length(self, node: ast.Length):
        """LENGTH of a structure-level list whose length is fixed (a cell has 3 vectors)."""
        holds = _OPS[node.op](_FIXED_LENGTH[node.field], node.n)
        if node.field == "lattice_vectors":
            return S.cell.isnot(None) if holds else false()
        return true() if holds else false()

    def _known(self, node: ast.Known):
        f = node.field
        if f == "lattice_vectors":
            expr = S.cell.isnot(None)
        elif f in ("dimension_types", "structure_features"):
            expr = true()
        elif f in COLUMNS:
            expr = COLUMNS[f].isnot(None)
        elif f == "id":
            expr = S.id.isnot(None)
        elif f == "_nnp_levels":
            lab = labels.alias().c
            expr = _sub(lab.structure_id == S.id, lab.status == "ok")
        elif FIELDS[f].needs_level:
            lab, value = self._level_value(f)
            expr = _labels_where(*lab, value.isnot(None))
        elif f == "_nnp_dataset":
            dm = dataset_members.alias().c
            expr = _sub(dm.structure_id == S.id)
        else:  # _nnp_run
            lab = labels.alias().c
            expr = or_(S.run_id.isnot(None),
                       _sub(lab.structure_id == S.id, lab.run_id.isnot(None)))
        return expr if node.known else not_(expr)

    def _has(self, node: ast.Has):
        f, mode, vals = node.field, node.mode, node.values
        if f == "dimension_types":
            return self._set(mode, list(vals), _dimension_types)
        if f == "structure_features":  # the list is always empty
            return self._set(mode, list(vals), lambda keys, negate=False: false())
        if f == "_nnp_levels":
            return self._set(mode, [self._level_id(v) for v in vals], self._labelled)
        if f == "_nnp_dataset":
            return self._set(mode, [self._version_id(v) for v in vals], self._member)
        return self._set(mode, list(vals), self._made_by)

    @staticmethod
    def _set(mode, keys, test):
        """HAS / ALL / ANY / ONLY from ``test(keys, negate=False)`` (an EXISTS)."""
        if mode == "ALL":
            return _wide(and_, [test([k]) for k in keys])
        if mode == "ONLY":
            return not_(test(keys, negate=True))
        return test(keys)

    # ------------------------------------------------------------------ sub-queries
    @staticmethod
    def _labelled(level_ids, negate=False):
        lab = labels.alias().c
        if negate:
            cond = lab.level_id.not_in(level_ids)
        else:
            cond = lab.level_id == level_ids[0] if len(level_ids) == 1 else \
                lab.level_id.in_(level_ids)
        return _sub(lab.structure_id == S.id, lab.status == "ok", cond)

    @staticmethod
    def _member(version_ids, negate=False):
        dm = dataset_members.alias().c
        cond = dm.version_id == version_ids[0] if len(version_ids) == 1 else \
            dm.version_id.in_(version_ids)
        return _sub(dm.structure_id == S.id, cond)

    @staticmethod
    def _made_by(run_ids, negate=False):
        lab = labels.alias().c
        run_ids = _in_range(S.run_id, run_ids)  # no run has an id beyond 64 bits
        if not run_ids:
            return false()
        return or_(S.run_id.in_(run_ids), _sub(lab.structure_id == S.id,
                                                lab.run_id.in_(run_ids)))

    def _level_value(self, field: str):
        """(conditions selecting the ok labels at ``self.level``, value expression); both
        name only the label (and its composition), not the structure."""
        if self.level is None:
            raise BadInput(f"field {field} needs a level of theory: pass --level LEVEL "
                           "(Python: level=...)")
        lab = labels.alias().c
        lid = self._level_id(self.level)
        conds = (lab.level_id == lid, lab.status == "ok")
        if field == "_nnp_energy":
            return conds, lab.energy
        if field == "_nnp_max_force":
            return conds, lab.max_force
        return conds, per_atom(lab, lid)

    def _level_id(self, name: str):
        return level_id(name, self.session)

    def _version_id(self, ref_text: str):
        return dataset_version_id(ref_text, self.session)


def _level_has(node) -> bool:
    """Whether ``node`` requires an ok label at one of its (or all its) levels."""
    return isinstance(node, ast.Has) and node.field == "_nnp_levels" and node.mode != "ONLY"


def _labelled_in(level_ids, cond):
    """(clause, id select): structures with an ok label at one of ``level_ids`` whose
    composition satisfies ``cond`` (a condition on ``compositions``), found through the
    index ``(level_id, composition_id, structure_id)`` of labels: only the labels of the
    matching compositions at those levels are read, never the other structures of those
    compositions. The id select names each structure once (a structure has at most one ok
    label per level) and only existing ones (labels reference structures), so a count or
    id list can be answered from it without visiting ``structures``."""
    lab = labels.alias().c
    level = lab.level_id == level_ids[0] if len(level_ids) == 1 else lab.level_id.in_(level_ids)
    ids = select(lab.structure_id.label("id")).where(
        level, lab.status == "ok",
        lab.composition_id.in_(select(C.id).where(cond).correlate(None))).correlate(None)
    if len(level_ids) > 1:
        ids = ids.distinct()
    return S.id.in_(ids), ids


def _labels_where(*conds):
    """Structures with a label satisfying ``conds`` (on that label alone): ``id IN (SELECT
    structure_id ...)``, which the planner drives from the labels of the level, where an
    ``EXISTS`` computing the value per structure made it read every structure."""
    lab = conds[0].left.table.c  # the labels alias the conditions name
    return S.id.in_(select(lab.structure_id).where(*conds).correlate(None))


def _deepest_first(items) -> list:
    return sorted(items, key=_depth, reverse=True)


def _by_depth(parts) -> list:
    """The clauses of ``(depth, clause)`` pairs, most deeply nested first (a stable sort):
    SQLite's parser then holds one open parenthesis per level, not an operand and operator
    as well."""
    return [c for _, c in sorted(parts, key=lambda p: -p[0])]


def level_id(name: str, session=None):
    """Id of the level ``name``; without a session, a scalar sub-query (NULL if unknown)."""
    if session is None:
        lot = levels_of_theory.c
        return (select(lot.id).where(lot.name == canonical_name(name))
                .scalar_subquery())
    return level_row(session, name).id


def dataset_version_id(ref_text: str, session=None):
    """Id of the dataset version ``NAME:N`` / ``NAME@ALIAS`` / ``NAME`` (= ``NAME@latest``).

    With a session, looked up (NotFound if missing); without one, a scalar sub-query that
    is NULL, so matches nothing, when the version does not exist.
    """
    ref = parse_ref(ref_text)
    if session is not None:
        return dataset_version(session, ref)[0].id
    ds, dv, da = datasets.c, dataset_versions.c, dataset_aliases.c
    named = ds.name == ref.name
    if ref.version is not None:
        return (select(dv.id).join(datasets, ds.id == dv.dataset_id)
                .where(named, dv.version == ref.version).scalar_subquery())
    alias = (select(da.version_id).join(datasets, ds.id == da.dataset_id)
             .where(named, da.alias == ref.alias).scalar_subquery())
    if ref.alias != LATEST:
        return alias
    newest = (select(dv.id).join(datasets, ds.id == dv.dataset_id)
              .where(named).order_by(dv.version.desc()).limit(1).scalar_subquery())
    return func.coalesce(alias, newest)


def per_atom(lab, lid):
    """Energy per atom of the label ``lab`` (a labels alias's columns); minus Σ n_Z·E_ref(Z)
    when the level has reference energies. Computed from the label's composition alone.

    A structure with an element lacking a reference energy then has no value (no match).
    """
    lab_t = lab.structure_id.table
    ce, re_t = composition_elements.alias().c, reference_energies.alias()
    re_ = re_t.c
    has_refs = exists().where(reference_energies.c.level_id == lid)
    # Both sub-queries walk the level's reference energies and probe (z, composition_id).
    count = (select(ce.count).where(ce.z == re_.z, ce.composition_id == lab.composition_id)
             .correlate(lab_t, re_t).scalar_subquery())
    ref_sum = (select(func.sum(re_.energy * count)).where(re_.level_id == lid)
               .correlate(lab_t).scalar_subquery())
    ce2, re2_t = composition_elements.alias().c, reference_energies.alias()
    re2 = re2_t.c
    covered = (select(func.count()).select_from(re2_t)
               .where(re2.level_id == lid,
                      exists().where(ce2.z == re2.z, ce2.composition_id == lab.composition_id)
                      .correlate(lab_t, re2_t))
               .correlate(lab_t).scalar_subquery())
    c_t = compositions.alias()
    comp = select(c_t.c.nelements, c_t.c.n_atoms).where(c_t.c.id == lab.composition_id) \
        .correlate(lab_t)
    nelements = comp.with_only_columns(c_t.c.nelements).scalar_subquery()
    n = cast(comp.with_only_columns(c_t.c.n_atoms).scalar_subquery(), Float)
    missing = covered < nelements
    return case((~has_refs, lab.energy / n), (missing, null()), else_=(lab.energy - ref_sum) / n)


__all__ = ["COLUMNS", "COMPOSITION", "Compiler", "dataset_version_id", "level_id"]
