"""Levels of theory: canonical names, content hashes, and their rows (created on first use).

Core only (:mod:`.tables`): rows are read as :class:`~sqlalchemy.engine.Row` (attributes like
an ORM object, read-only), so the query path that resolves levels never imports the ORM. The
functions taking a session ``s`` accept an ORM session or a Core connection alike.
"""

from __future__ import annotations

import hashlib
import json
import re

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from ..errors import BadInput, Conflict, NotFound
from .names import level_form
from .provenance import current_user
from .refs import check_int, check_text, int_range, shown
from .tables import levels_of_theory, reference_energies

_NAME = re.compile(r"^[a-z0-9][a-z0-9()*+,\-_.'/ ]*$")


def canonical_name(name: str) -> str:
    """Lower-case, trimmed level name, e.g. ``wB97X/6-31G*`` -> ``wb97x/6-31g*``."""
    if not isinstance(name, str):
        raise BadInput(f"a level-of-theory name must be text, got {type(name).__name__}")
    canon = level_form(name)
    if not canon or not _NAME.match(canon):
        raise BadInput(f"invalid level-of-theory name {shown(name)}")
    return check_text(canon, "level-of-theory name", levels_of_theory.c.name)


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


# Default fidelity ranks by method family (higher = more accurate); override with --fidelity-rank.
_RANKS = [
    (("emt", "lj", "morse"), 0),
    (("gfn0", "gfn1", "gfn2", "xtb", "dftb", "pm6", "pm7", "am1"), 10),
    (("hf",), 15),
    (("mp2", "ri-mp2"), 30),
    (("ccsd(t)", "dlpno-ccsd(t)", "ccsd"), 40),
]
_DESCRIPTIVE = ("program", "program_version", "keywords", "description")


def default_rank(method: str) -> int:
    for prefixes, rank in _RANKS:
        if any(method == p or method.startswith(p + "-") or method.startswith(p)
               for p in prefixes):
            return rank
    return 20  # DFT and anything else


def level_dict(lv: Row, refs: dict[int, float] | None = None) -> dict:
    out = {c: getattr(lv, c) for c in ("id", "name", "method", "basis", "program",
                                        "program_version", "keywords", "hash",
                                        "fidelity_rank", "description")}
    if refs is not None:
        out["reference_energies"] = refs
    return out


def _known_levels(s) -> str:
    names = s.scalars(select(levels_of_theory.c.name).order_by(levels_of_theory.c.name)).all()
    return ", ".join(names) or "(none)"


def _by_name(s, canon: str) -> Row | None:
    return s.execute(select(levels_of_theory).where(levels_of_theory.c.name == canon)).first()


def level_row(s, name: str) -> Row:
    """The level called ``name`` (any case/spacing); NotFound lists the known levels."""
    canon = canonical_name(name)
    lv = _by_name(s, canon)
    if lv is None:
        raise NotFound(f"unknown level of theory {canon!r}; known levels: "
                       f"{_known_levels(s)}")
    return lv


def level_rows(s, names) -> list[Row]:
    """The levels called ``names``, in that order (see :func:`level_row`)."""
    return [level_row(s, n) for n in names]


def level_ids(s, names=None) -> dict[str, int]:
    """{canonical name: id} of ``names`` (default: every level, by name)."""
    if names is None:
        return dict(s.execute(select(levels_of_theory.c.name, levels_of_theory.c.id)
                              .order_by(levels_of_theory.c.name)).all())
    return {lv.name: lv.id for lv in (level_row(s, n) for n in names)}


def ensure_level(reg, name: str, **fields) -> dict:
    """The level called ``name``, created on first use (method/basis parsed from it)."""
    canon = canonical_name(name)
    with reg.connect() as s:
        lv = _by_name(s, canon)
        if lv is not None:
            return level_dict(lv)
    try:
        return add_level(reg, canon, **fields)
    except Conflict:  # created concurrently by another process
        with reg.connect() as s:
            return level_dict(_by_name(s, canon))


def add_level(reg, name: str, *, method=None, basis=None, program=None,
              program_version=None, keywords=None, fidelity_rank=None,
              description=None) -> dict:
    """Create a level, or fill in the unset descriptive fields of an existing one.

    Changing a field that is already set is refused (labels were computed with it).
    """
    canon = canonical_name(name)
    p_method, p_basis = parse_name(canon)
    L = levels_of_theory.c
    method = check_text(method, "level method", L.method)
    basis = check_text(basis, "level basis", L.basis)
    method = (method or p_method).lower()
    basis = (basis or p_basis)
    basis = basis.lower() if basis else None
    # Parsed from a long name, method or basis may still be longer than their columns.
    check_text(method, f"method of level {shown(canon)}", L.method)
    check_text(basis, f"basis of level {shown(canon)}", L.basis)
    check_text(program, "level program", L.program)
    check_text(program_version, "level program version", L.program_version)
    check_text(description, "level description")
    keywords = _check_keywords(keywords)
    if fidelity_rank is not None:
        lo, hi = int_range(L.fidelity_rank)
        fidelity_rank = check_int(fidelity_rank, "fidelity rank", lo, hi)
    # Every write records its user (runs.user): a user name that cannot be recorded is
    # refused here, before an ingest creates its levels and only then opens its run.
    current_user()
    with reg.connect() as s:
        lv = _by_name(s, canon)
        if lv is None:
            try:
                s.execute(insert(levels_of_theory).values(
                    name=canon, method=method, basis=basis, program=program,
                    program_version=program_version, keywords=keywords,
                    fidelity_rank=default_rank(method) if fidelity_rank is None
                    else fidelity_rank,
                    description=description,
                    hash=level_hash(method, basis, program, program_version, keywords)))
            except IntegrityError:
                raise Conflict(f"level {canon!r} (or an identical one) exists") from None
            return level_dict(_by_name(s, canon))
        if (method, basis) != (lv.method, lv.basis):
            raise Conflict(f"level {canon!r} exists with method/basis "
                           f"{lv.method}/{lv.basis}")
        new = dict(program=program, program_version=program_version, keywords=keywords,
                   description=description)
        changes = {}
        for key, value in new.items():
            old = getattr(lv, key)
            if value is None or value == old:
                continue
            if old is not None:
                raise Conflict(f"level {canon!r} already has {key}={old!r}; refusing to "
                               f"change it to {value!r}")
            changes[key] = value
        if fidelity_rank is not None:
            changes["fidelity_rank"] = fidelity_rank
        now = {**lv._asdict(), **changes}
        changes["hash"] = level_hash(now["method"], now["basis"], now["program"],
                                     now["program_version"], now["keywords"])
        s.execute(update(levels_of_theory).where(levels_of_theory.c.id == lv.id).values(**changes))
        return level_dict(_by_name(s, canon))


def _check_keywords(keywords) -> dict | None:
    """Keywords as stored: a JSON object of finite numbers (PostgreSQL's JSON has no NaN)."""
    if keywords is None:
        return None
    if not isinstance(keywords, dict):
        raise BadInput("level keywords must be a JSON object")
    try:
        return json.loads(json.dumps(keywords, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"level keywords are not valid JSON (NaN and Infinity are not "
                       f"allowed): {exc}") from None


def get_level(reg, name: str) -> dict:
    """The level ``name`` with its reference energies; NotFound lists the known ones."""
    canon = canonical_name(name)
    re_ = reference_energies.c
    with reg.connect() as s:
        lv = level_row(s, canon)
        refs = dict(s.execute(select(re_.z, re_.energy).where(re_.level_id == lv.id)).all())
        return level_dict(lv, refs)


def list_levels(reg) -> list[dict]:
    """Every level, by fidelity rank then name."""
    with reg.connect() as s:
        rows = s.execute(select(levels_of_theory).order_by(levels_of_theory.c.fidelity_rank,
                                                        levels_of_theory.c.name)).all()
        return [level_dict(lv) for lv in rows]
