"""A dataset version extended by new labels, its splits kept stable.

:func:`extend_dataset_version` makes version N+1 of a dataset holding every member of a base
version in the split it had, plus the structures of some new ``ok`` labels at the base's
level (active learning adds each iteration's labels this way). Old members never move; a new
member joins the split of its group (the base's ``group_by``: formula or source) when the
base has that group, so a group is never cut across splits; the rest are split with the
base's fractions, seed and strata (``stratify_by``), by the same rule as
:func:`.splits.assign_splits`.

Content equal to a version the dataset already has returns that version and writes nothing,
so re-running an interrupted extension does not make a duplicate.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from ..errors import BadInput
from ..store.levels import level_rows
from ..store.lookups import dataset_version
from ..store.refs import check_name, check_text
from ..store.runs import run
from ..store.schema import (
    Dataset,
    DatasetMember,
    DatasetVersion,
    Label,
    Structure,
)
from .dataset_hash import dataset_hash
from .datasets import (
    dataset_version_dict,
    group_column,
    stratum_columns,
    with_compositions,
    write_version,
)
from .splits import SPLIT_NAMES, assign_splits, check_seed, parse_fractions


def extend_dataset_version(reg, base_ref, name: str, label_ids, *, note: str | None = None,
                           params: dict | None = None, allow_empty: bool = False) -> dict:
    """Version N+1 of dataset ``name``: the members of ``base_ref`` (same splits) plus the
    structures of ``label_ids`` (``ok`` labels at the base's one level; a structure already
    in the base is skipped). ``params`` are recorded with the version and its run.

    Returns the version as :func:`.datasets.dataset_version_dict` plus ``split_counts``,
    ``added`` (new members) and ``created`` (False when an identical version existed).
    ``allow_empty``: when every structure is already in the base, return the base (``added``
    0) instead of refusing.
    """
    check_name(name, "dataset name")
    check_text(note, "note")
    wanted = sorted({int(i) for i in label_ids})
    if not wanted:
        raise BadInput("no labels to add; the extended version would equal its base")
    with reg.session() as s:
        dv, base_name = dataset_version(s, base_ref)
        base = dataset_version_dict(dv, base_name)
        bparams = dict(dv.params or {})
        if len(dv.levels) != 1 or bparams.get("delta"):
            raise BadInput(f"dataset {base['ref']} has levels {dv.levels}"
                           f"{' (a delta version)' if bparams.get('delta') else ''}; only a "
                           f"single-level version can be extended by new labels")
        level = level_rows(s, dv.levels)[0]
        group_by = bparams.get("group_by") or "formula"
        group = group_column(group_by)
        stratify_by = bparams.get("stratify_by")
        stratum = stratum_columns(stratify_by)
        old = s.execute(with_compositions(
            select(DatasetMember.structure_id, DatasetMember.label_id, DatasetMember.split,
                   Structure.hash, Label.hash, group)
            .join(Structure, Structure.id == DatasetMember.structure_id)
            .join(Label, Label.id == DatasetMember.label_id)
            .where(DatasetMember.version_id == dv.id), group_by)).all()
        new = s.execute(with_compositions(
            select(Label.structure_id, Label.id, Label.level_id, Label.status,
                   Structure.hash, Label.hash, group, *stratum)
            .join(Structure, Structure.id == Label.structure_id)
            .where(Label.id.in_(wanted)), group_by, stratify_by)).all()
    found = {r[1] for r in new}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise BadInput(f"no label with id {', '.join(map(str, missing[:10]))}")
    for r in new:
        if r[2] != level.id or r[3] != "ok":
            raise BadInput(f"label {r[1]} is not an ok label at {level.name} (the level of "
                           f"{base['ref']})")
    members = {r[0] for r in old}
    new = [r for r in new if r[0] not in members]
    if not new and allow_empty:
        return {**base, "split_counts": None, "added": 0, "created": False}
    if not new:
        raise BadInput(f"every structure of the {len(wanted)} label(s) is already in "
                       f"{base['ref']}")
    fractions = parse_fractions(bparams.get("split") or "0.8,0.1,0.1")
    seed = check_seed(int(bparams.get("seed") or 0))
    known = {}
    for r in old:
        known.setdefault(r[5] or "", r[2])
    new_groups = [r[6] or "" for r in new]
    splits = np.array([known.get(g, -1) if group_by != "none" else -1 for g in new_groups],
                      dtype=np.int64)
    fresh = np.flatnonzero(splits < 0)
    if len(fresh):
        splits[fresh] = assign_splits([new[i][4] for i in fresh],
                                      [new_groups[i] for i in fresh], fractions, seed,
                                      [new[i][7] for i in fresh] if stratum else None)
    triples = [(r[3], r[4], int(r[2])) for r in old] + \
        [(r[4], r[5], int(sp)) for r, sp in zip(new, splits, strict=True)]
    digest = dataset_hash(triples, [level.name], None)
    counts = {SPLIT_NAMES[k]: int(sum(1 for t in triples if t[2] == k)) for k in range(3)}
    with reg.session() as s:
        same = s.execute(select(DatasetVersion).join(Dataset, Dataset.id ==
                                                     DatasetVersion.dataset_id)
                         .where(Dataset.name == name, DatasetVersion.hash == digest)
                         .order_by(DatasetVersion.version).limit(1)).scalar()
        if same is not None:
            return {**dataset_version_dict(same, name), "split_counts": counts,
                    "added": len(new), "created": False}
    vparams = {**bparams, "split": list(fractions), "group_by": group_by, "seed": seed,
               "delta": None, "extends": base["ref"], "added": len(new), **(params or {})}
    sel = {"structure_ids": [r[0] for r in old] + [r[0] for r in new],
           "label_ids": [[r[1] for r in old] + [r[1] for r in new]]}
    all_splits = np.concatenate([np.array([r[2] for r in old], dtype=np.int64), splits])
    with run(reg, "dataset_extend", {"base": base["ref"], "name": name, "added": len(new),
                                     **(params or {})}) as handle:
        handle.consumed("dataset_version", base["id"], ref=base["ref"], sha256=base["hash"])
        handle.consumed("level", level.id, ref=level.name)
        out = write_version(reg, name, [level.name], None, vparams, note, sel, all_splits,
                            digest, handle.id)
        handle.produced("dataset_version", out["id"], ref=out["ref"], sha256=digest)
        handle.result = {"ref": out["ref"], "n_structures": len(sel["structure_ids"]),
                         "added": len(new), "hash": digest}
    return {**out, "split_counts": counts, "added": len(new), "created": True}
