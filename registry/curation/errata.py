"""Errata: retract labels (never delete them) and find what used them.

Retraction only changes ``labels.status`` to ``retracted`` with a reason; dataset versions keep
pinning the rows, so they stay reproducible, while new versions select only ``ok`` labels.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from ..errors import BadInput, NotFound
from ..models.versions import models_using_dataset_versions
from ..store.levels import get_level
from ..store.lookups import dataset_version
from ..store.refs import check_int, check_text, fits_id
from ..store.runs import run
from ..store.schema import Dataset, DatasetMember, DatasetVersion, Label, Structure

_CHUNK = 5000


def _label_ids(label_ids) -> list[int]:
    """The ids as ints (BadInput for anything but integers); ids outside 1..2**63-1 are
    kept, as ids that match no label (a driver would refuse to bind them)."""
    if isinstance(label_ids, str | bytes) or not hasattr(label_ids, "__iter__"):
        label_ids = [label_ids]
    return [check_int(i, "label id", lo=None, hi=None) for i in label_ids]


def _chunks(ids):
    ids = list(ids)
    for lo in range(0, len(ids), _CHUNK):
        yield ids[lo: lo + _CHUNK]


def retract_labels(reg, *, level: str, reason: str, filter: str | None = None,
                   label_ids=None) -> dict:
    """Retract the ``ok`` labels at ``level`` of structures matching ``filter`` (or the
    given ``label_ids``); returns the count, the ids and their impact."""
    if not isinstance(reason, str) or not reason.strip():
        raise BadInput("a retraction needs a --reason")
    check_text(reason, "retraction reason")
    if filter is None and label_ids is None:
        raise BadInput("give --filter (use a filter matching all to retract everything)")
    lv = get_level(reg, level)
    q = select(Label.id).where(Label.level_id == lv["id"], Label.status == "ok")
    with reg.session() as s:
        if filter is not None and str(filter).strip():
            from ..query import structure_filter

            clause = structure_filter(filter, level=lv["name"], session=s)
            q = q.where(Label.structure_id.in_(select(Structure.id).where(clause)))
        if label_ids is not None:
            found = []
            for chunk in _chunks(i for i in _label_ids(label_ids) if fits_id(i)):
                found += s.scalars(q.where(Label.id.in_(chunk))).all()
            ids = sorted(found)
        else:
            ids = sorted(s.scalars(q).all())
    if not ids:
        return {"level": lv["name"], "retracted": 0, "label_ids": [], "impact":
                {"dataset_versions": [], "model_versions": []}}
    with run(reg, "label_retract", {"level": lv["name"], "filter": str(filter),
                                    "reason": reason, "n": len(ids)}) as rec:
        with reg.session() as s:
            n = 0
            for chunk in _chunks(ids):
                n += s.execute(update(Label).where(Label.id.in_(chunk),
                                                   Label.status == "ok")
                               .values(status="retracted", status_reason=reason)).rowcount
        for i in ids:
            rec.produced("label", i, status="retracted")
        rec.result = {"retracted": n}
    return {"level": lv["name"], "retracted": n, "label_ids": ids,
            "impact": impact(reg, label_ids=ids)}


def impact(reg, ref: str | None = None, *, label_ids=None) -> dict:
    """Dataset versions that pin ``label_ids`` (or the version ``ref``), with their count of
    retracted labels, and the model versions trained on them."""
    with reg.session() as s:
        if ref is not None:
            dv_ids = {dataset_version(s, ref)[0].id}
            hits: dict[int, int] = {}
        elif label_ids is not None:
            ids = _label_ids(label_ids)
            have = set()
            for chunk in _chunks(i for i in ids if fits_id(i)):
                have.update(s.scalars(select(Label.id).where(Label.id.in_(chunk))))
            if missing := sorted(set(ids) - have):
                raise NotFound(f"no label with id {', '.join(map(str, missing[:10]))}")
            hits = {}
            for chunk in _chunks(sorted(have)):
                for vid, n in s.execute(select(DatasetMember.version_id, func.count())
                                        .where(DatasetMember.label_id.in_(chunk))
                                        .group_by(DatasetMember.version_id)):
                    hits[vid] = hits.get(vid, 0) + n
            dv_ids = set(hits)
        else:
            raise BadInput("give a dataset REF or --label ID")
        versions = []
        for chunk in _chunks(sorted(dv_ids)):
            rows = s.execute(
                select(DatasetVersion.id, Dataset.name, DatasetVersion.version,
                       DatasetVersion.hash)
                .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                .where(DatasetVersion.id.in_(chunk))).all()
            for vid, name, ver, h in rows:
                retracted = s.scalar(
                    select(func.count()).select_from(DatasetMember)
                    .join(Label, Label.id == DatasetMember.label_id)
                    .where(DatasetMember.version_id == vid, Label.status != "ok"))
                versions.append({"id": vid, "ref": f"{name}:{ver}", "hash": h,
                                 "labels_given": hits.get(vid), "retracted": retracted})
    versions.sort(key=lambda d: d["ref"])
    return {"dataset_versions": versions,
            "model_versions": models_using_dataset_versions(reg, sorted(dv_ids))}
