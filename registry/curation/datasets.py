"""Immutable dataset versions: pinned labels, splits, content hash, aliases, show and diff.

A version pins the ``ok`` label rows it uses (one per structure and level), so retracting or
correcting a label later never changes it. Numbers 1, 2, 3... per dataset are taken under a
lock on the dataset row (PostgreSQL ``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``), backed by
the unique (dataset, version) constraint.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import and_, case, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from ..chem.elements import SYMBOLS
from ..errors import BadInput, Conflict, NotFound
from ..store.levels import level_rows
from ..store.lookups import dataset_version
from ..store.refs import LATEST, Ref, check_alias, check_name, check_text
from ..store.rows import driver_rows
from ..store.runs import run
from ..store.schema import (
    Composition,
    CompositionElement,
    Dataset,
    DatasetAlias,
    DatasetMember,
    DatasetVersion,
    Label,
    Structure,
    utcnow,
)
from .dataset_hash import dataset_hash
from .dedup import check_tolerance, near_duplicates
from .splits import (
    GROUP_BY,
    SPLIT_NAMES,
    assign_splits,
    check_seed,
    check_stratify,
    parse_fractions,
)

_RETRIES = 5


def dataset_version_dict(dv: DatasetVersion, name: str, aliases: list[str] | None = None) -> dict:
    return {"id": dv.id, "name": name, "version": dv.version, "ref": f"{name}:{dv.version}",
            "hash": dv.hash, "filter": dv.filter, "levels": dv.levels, "params": dv.params,
            "note": dv.note, "n_structures": dv.n_structures, "run_id": dv.run_id,
            "created_at": dv.created_at, "aliases": sorted(aliases or [])}


def parse_delta(delta: str, levels: list[str]) -> dict:
    """``HIGH-LOW`` -> {"high", "low"}; level names may contain '-', so every cut is tried."""
    text = delta.strip().lower()
    found = []
    for i, ch in enumerate(text):
        if ch != "-":
            continue
        hi, lo = text[:i].strip(), text[i + 1:].strip()
        if hi and lo and hi in levels and lo in levels and hi != lo:
            found.append({"high": hi, "low": lo})
    if len(found) != 1:
        why = "is ambiguous" if found else "does not name two of the levels"
        raise BadInput(f"--delta {delta!r} {why} {levels}; write HIGH-LOW with two of them")
    return found[0]


# ------------------------------------------------------------------ resolve

def resolve_dataset(reg, ref: str | Ref) -> dict:
    """The version named by ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``."""
    with reg.session() as s:
        dv, name = dataset_version(s, ref)
        return dataset_version_dict(dv, name, _aliases_of(s, dv.id))


def _aliases_of(s, version_id: int) -> list[str]:
    return list(s.scalars(select(DatasetAlias.alias)
                          .where(DatasetAlias.version_id == version_id)))


def group_column(group_by: str):
    """The column whose value is a member's split group (``group_by``: formula, source, none)."""
    return {"formula": Composition.formula_reduced, "source": Structure.source,
            "none": Structure.hash}[group_by]


def stratum_columns(stratify_by: str | None) -> list:
    """The column of a member's stratum, as a list (empty when not stratified)."""
    return [Composition.formula_reduced] if stratify_by == "formula" else []


def with_compositions(query, group_by: str, stratify_by: str | None = None):
    """``query`` joined to its structures' compositions when the group or stratum needs it."""
    if "formula" in (group_by, stratify_by):
        return query.join(Composition, Composition.id == Structure.composition_id)
    return query


def select_members(reg, *, levels: list[str], filter: str | None = None,
                   group_by: str = "formula", delta: dict | None = None,
                   stratify_by: str | None = None) -> dict:
    """Structures matching ``filter`` with an ``ok`` label at every level (no writes).

    Returns columns: structure ids/hashes, group keys, strata (the formula when
    ``stratify_by`` is ``"formula"``, else None) and per-level label ids/hashes.
    """
    with reg.session() as s:
        lvs = level_rows(s, levels)
        clause = None
        if filter is not None and str(filter).strip():
            from ..query import structure_filter

            clause = structure_filter(filter, level=lvs[0].name, session=s)
        stratum = stratum_columns(stratify_by)
        labs = [aliased(Label) for _ in lvs]
        q = with_compositions(select(Structure.id, Structure.hash, group_column(group_by),
                                     *stratum, *[lab.id for lab in labs],
                                     *[lab.hash for lab in labs]), group_by, stratify_by)
        for lab, lv in zip(labs, lvs, strict=True):
            cond = and_(lab.structure_id == Structure.id, lab.level_id == lv.id,
                        lab.status == "ok")
            if delta is not None:
                cond = and_(cond, lab.energy.is_not(None))
            q = q.join(lab, cond)
        if clause is not None:
            q = q.where(clause)
        rows = driver_rows(s.connection(), q.order_by(Structure.hash))  # ints and strings
    k, j = len(lvs), 3 + len(stratum)
    cols = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(j + 2 * k)]
    return {"levels": [lv.name for lv in lvs], "level_ids": [lv.id for lv in lvs],
            "structure_ids": cols[0], "hashes": cols[1],
            "groups": [g if g is not None else "" for g in cols[2]],
            "strata": cols[3] if stratum else None,
            "label_ids": cols[j:j + k], "label_hashes": cols[j + k:j + 2 * k]}


def create_dataset_version(reg, name: str, *, levels: list[str] | str,
                           filter: str | None = None, split="0.8,0.1,0.1",
                           group_by: str = "formula", seed: int = 0,
                           note: str | None = None, delta: str | None = None,
                           exclude_duplicates: float | None = None,
                           stratify_by: str | None = None) -> dict:
    """Make version N+1 of dataset ``name`` (created on first use); ``latest`` moves to it.

    Several ``levels`` keep only structures labeled ``ok`` at all of them; ``delta``
    ``"HIGH-LOW"`` makes the target the difference. ``exclude_duplicates`` (a tolerance
    in Å) keeps one structure per near-duplicate cluster. ``stratify_by="formula"`` splits
    each formula's groups separately (with ``group_by`` source or none), so every formula
    with more than one group has training members. Bad input writes nothing.
    """
    check_name(name, "dataset name")
    check_text(note, "note")
    if filter is not None and not isinstance(filter, str):
        filter = str(filter)  # a registry.query.Q expression
    if isinstance(levels, str):
        levels = [levels]
    if not levels:
        raise BadInput("give at least one level of theory (--level)")
    fractions = parse_fractions(split)
    seed = check_seed(seed)
    if exclude_duplicates is not None:
        exclude_duplicates = check_tolerance(exclude_duplicates, "--exclude-duplicates")
    if group_by not in GROUP_BY:
        raise BadInput(f"--group-by {group_by!r}: expected one of {', '.join(GROUP_BY)}")
    stratify_by = check_stratify(stratify_by, group_by)
    with reg.session() as s:
        lvs = level_rows(s, levels)
        lvs = sorted({lv.id: lv for lv in lvs}.values(),
                     key=lambda lv: (-lv.fidelity_rank, lv.name))
        names = [lv.name for lv in lvs]
    dspec = parse_delta(delta, names) if delta else None
    if dspec and len(names) != 2:
        raise BadInput(f"--delta needs exactly its two levels, got {names}")
    if dspec:  # target level first
        names = [dspec["high"], dspec["low"]]
    sel = select_members(reg, levels=names, filter=filter, group_by=group_by, delta=dspec,
                         stratify_by=stratify_by)
    excluded = 0
    if exclude_duplicates is not None:
        sel, excluded = _drop_near_duplicates(reg, sel, exclude_duplicates)
    n = len(sel["structure_ids"])
    if n == 0:
        raise BadInput(f"no structure matches filter {filter!r} with an ok label at "
                       f"{' and '.join(names)}; nothing created")
    splits = assign_splits(sel["hashes"], sel["groups"], fractions, seed, sel["strata"])
    triples = [(h, lh[i], int(splits[i])) for lh in sel["label_hashes"]
               for i, h in enumerate(sel["hashes"])]
    digest = dataset_hash(triples, names, dspec)
    params = {"split": list(fractions), "group_by": group_by, "stratify_by": stratify_by,
              "seed": seed, "delta": dspec,
              "exclude_duplicates": exclude_duplicates, "excluded_duplicates": excluded}
    with run(reg, "dataset_create", {"name": name, "filter": filter, "levels": names,
                                     **params}) as handle:
        for lv_name, lid in zip(names, sel["level_ids"], strict=True):
            handle.consumed("level", lid, ref=lv_name)
        out = write_version(reg, name, names, filter, params, note, sel, splits, digest,
                             handle.id)
        handle.produced("dataset_version", out["id"], ref=out["ref"], sha256=digest)
        handle.result = {"ref": out["ref"], "n_structures": n, "hash": digest}
    out["split_counts"] = {SPLIT_NAMES[k]: int((splits == k).sum()) for k in range(3)}
    return out


def write_version(reg, name, names, filter, params, note, sel, splits, digest, run_id):
    """Number and write version N+1 of dataset ``name`` (created on first use) with the
    members of ``sel`` (structure and per-level label ids) and their ``splits``; ``latest``
    moves to it. One transaction, retried when a concurrent writer took the number."""
    for attempt in range(_RETRIES):
        try:
            with reg.session() as s:
                ds = s.scalar(select(Dataset).where(Dataset.name == name)
                              .with_for_update())
                if ds is None:
                    ds = Dataset(name=name)
                    s.add(ds)
                    s.flush()
                last = s.scalar(select(func.max(DatasetVersion.version))
                                .where(DatasetVersion.dataset_id == ds.id)) or 0
                dv = DatasetVersion(dataset_id=ds.id, version=last + 1, hash=digest,
                                    filter=filter, levels=names, params=params, note=note,
                                    n_structures=len(sel["structure_ids"]), run_id=run_id)
                s.add(dv)
                s.flush()
                _insert_members(reg, s, dv.id, sel, splits)
                _set_alias(s, ds.id, LATEST, dv.id)
                return dataset_version_dict(dv, name, [LATEST])
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise Conflict(f"could not number a new version of {name!r} "
                               "(concurrent writers); try again") from None
    raise AssertionError("unreachable")


def _insert_members(reg, s, version_id, sel, splits) -> None:
    """All member rows in one statement, in primary-key (label id) order; on PostgreSQL one
    binary COPY whose rows numpy packs at once."""
    k = len(sel["label_ids"])
    lab = np.concatenate([np.asarray(c, dtype=np.int64) for c in sel["label_ids"]])
    sid = np.tile(np.asarray(sel["structure_ids"], dtype=np.int64), k)
    sp = np.tile(np.asarray(splits, dtype=np.int16), k)
    o = np.argsort(lab, kind="stable")
    lab, sid, sp = lab[o], sid[o], sp[o]
    conn = s.connection()
    if reg.dialect == "postgresql":
        from ..store import pgcopy

        pgcopy.copy_into(conn.connection.driver_connection.cursor(), "dataset_members",
                         pgcopy.pack(len(lab), [("version_id", ">i8", version_id),
                                                ("label_id", ">i8", lab),
                                                ("structure_id", ">i8", sid),
                                                ("split", ">i2", sp)], []))
    else:
        conn.exec_driver_sql(
            "INSERT INTO dataset_members (version_id, label_id, structure_id, split) "
            "VALUES (?, ?, ?, ?)",
            list(zip([version_id] * len(lab), lab.tolist(), sid.tolist(), sp.tolist(),
                     strict=True)))


def _set_alias(s, dataset_id: int, alias: str, version_id: int) -> None:
    row = s.get(DatasetAlias, (dataset_id, alias))
    if row is None:
        s.add(DatasetAlias(dataset_id=dataset_id, alias=alias, version_id=version_id,
                           updated_at=utcnow()))
    else:
        row.version_id, row.updated_at = version_id, utcnow()
    s.flush()


def _drop_near_duplicates(reg, sel: dict, tolerance: float) -> tuple[dict, int]:
    clusters = near_duplicates(reg, structure_ids=sel["structure_ids"],
                                    tolerance=tolerance)["clusters"]
    drop = {sid for c in clusters for sid in c["structure_ids"][1:]}  # keep the first
    keep = [i for i, sid in enumerate(sel["structure_ids"]) if sid not in drop]
    out = {k: v for k, v in sel.items() if k in ("levels", "level_ids")}
    for k in ("structure_ids", "hashes", "groups"):
        out[k] = [sel[k][i] for i in keep]
    out["strata"] = None if sel["strata"] is None else [sel["strata"][i] for i in keep]
    for k in ("label_ids", "label_hashes"):
        out[k] = [[col[i] for i in keep] for col in sel[k]]
    return out, len(sel["structure_ids"]) - len(keep)


_LATEST_IS_AUTOMATIC = ("'latest' is automatic (it always names the newest version of the "
                        "dataset) and cannot be {}")


def alias_dataset(reg, ref: str, alias: str) -> dict:
    """Point ``alias`` of the dataset at the version ``ref`` names (must exist)."""
    check_alias(alias)
    if alias == LATEST:
        raise BadInput(_LATEST_IS_AUTOMATIC.format("set"))
    with reg.session() as s:
        dv, name = dataset_version(s, ref)
        _set_alias(s, dv.dataset_id, alias, dv.id)
        return dataset_version_dict(dv, name, _aliases_of(s, dv.id))


def remove_dataset_alias(reg, name: str, alias: str) -> None:
    if alias == LATEST:
        raise BadInput(_LATEST_IS_AUTOMATIC.format("removed"))
    with reg.session() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == name))
        n = 0 if ds is None else s.execute(delete(DatasetAlias).where(
            DatasetAlias.dataset_id == ds.id, DatasetAlias.alias == alias)).rowcount
        if not n:
            raise NotFound(f"dataset {name!r} has no alias {alias!r}")


def list_datasets(reg) -> list[dict]:
    """Every dataset with its versions and aliases."""
    with reg.session() as s:
        out = []
        for ds in s.scalars(select(Dataset).order_by(Dataset.name)):
            aliases: dict[int, list[str]] = {}
            for a in s.scalars(select(DatasetAlias).where(DatasetAlias.dataset_id == ds.id)):
                aliases.setdefault(a.version_id, []).append(a.alias)
            vers = s.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
                             .order_by(DatasetVersion.version)).all()
            out.append({"name": ds.name, "versions": [
                dataset_version_dict(v, ds.name, aliases.get(v.id)) for v in vers]})
        return out


def _members(s, dv: DatasetVersion) -> dict:
    """{level name: {structure hash: (label hash, split, label status)}}."""
    lvs = {lv.id: lv.name for lv in level_rows(s, dv.levels)}
    rows = s.execute(
        select(Label.level_id, Structure.hash, Label.hash, DatasetMember.split,
               Label.status)
        .join(Label, Label.id == DatasetMember.label_id)
        .join(Structure, Structure.id == DatasetMember.structure_id)
        .where(DatasetMember.version_id == dv.id)).all()
    out: dict[str, dict] = {name: {} for name in dv.levels}
    for lid, sh, lh, sp, st in rows:
        out[lvs[lid]][sh] = (lh, sp, st)
    return out


def show_dataset(reg, ref: str) -> dict:
    """Counts per split, element and level; energy statistics; hash and parameters."""
    with reg.session() as s:
        dv, name = dataset_version(s, ref)
        out = dataset_version_dict(dv, name, _aliases_of(s, dv.id))
        first = level_rows(s, dv.levels[:1])[0]
        one = and_(DatasetMember.version_id == dv.id, Label.id == DatasetMember.label_id,
                   Label.level_id == first.id)
        splits = dict(s.execute(select(DatasetMember.split, func.count())
                                .select_from(DatasetMember).join(Label, one)
                                .group_by(DatasetMember.split)).all())
        out["split_counts"] = {n: int(splits.get(k, 0)) for k, n in enumerate(SPLIT_NAMES)}
        ce = CompositionElement
        elems = s.execute(
            select(ce.z, func.count(), func.sum(ce.count))
            .select_from(DatasetMember).join(Label, one)
            .join(Structure, Structure.id == DatasetMember.structure_id)
            .join(ce, ce.composition_id == Structure.composition_id)
            .group_by(ce.z).order_by(ce.z)).all()
        out["elements"] = {SYMBOLS[z]: {"structures": int(n), "atoms": int(a)}
                           for z, n, a in elems}
        out["per_level"] = {}
        for lv in level_rows(s, dv.levels):
            row = s.execute(
                select(func.count(), func.count(Label.energy), func.min(Label.energy),
                       func.max(Label.energy), func.avg(Label.energy),
                       func.avg(Label.energy * Label.energy),
                       func.sum(case((Label.status != "ok", 1), else_=0)))
                .select_from(DatasetMember)
                .join(Label, Label.id == DatasetMember.label_id)
                .where(DatasetMember.version_id == dv.id, Label.level_id == lv.id)).one()
            n, ne, lo, hi, mean, sq, not_ok = row
            std = (max(float(sq) - float(mean) ** 2, 0.0) ** 0.5) if ne else None
            out["per_level"][lv.name] = {
                "labels": int(n), "energies": int(ne), "retracted_since": int(not_ok or 0),
                "energy_eV": {"min": lo, "max": hi, "mean": mean, "std": std}}
        return out


def diff_datasets(reg, ref_a: str, ref_b: str, *, sample: int = 20) -> dict:
    """Structures added / removed, relabelled (same structure and level, other label) and
    moved between splits, from ``ref_a`` to ``ref_b``."""
    with reg.session() as s:
        a, na = dataset_version(s, ref_a)
        b, nb = dataset_version(s, ref_b)
        ma, mb = _members(s, a), _members(s, b)
    sa = set().union(*[set(v) for v in ma.values()])
    sb = set().union(*[set(v) for v in mb.values()])
    added, removed = sorted(sb - sa), sorted(sa - sb)
    relabelled, moved = set(), set()
    for lv in set(ma) & set(mb):
        for h in set(ma[lv]) & set(mb[lv]):
            if ma[lv][h][0] != mb[lv][h][0]:
                relabelled.add(h)
            if ma[lv][h][1] != mb[lv][h][1]:
                moved.add(h)
    return {"a": f"{na}:{a.version}", "b": f"{nb}:{b.version}",
            "hash_a": a.hash, "hash_b": b.hash, "identical": a.hash == b.hash,
            "levels_a": a.levels, "levels_b": b.levels,
            "added": len(added), "removed": len(removed), "relabelled": len(relabelled),
            "split_changed": len(moved), "unchanged": len((sa & sb) - relabelled - moved),
            "sample": {"added": added[:sample], "removed": removed[:sample],
                       "relabelled": sorted(relabelled)[:sample],
                       "split_changed": sorted(moved)[:sample]}}
