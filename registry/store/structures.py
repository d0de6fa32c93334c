"""Stored structures read back as FrameBatch chunks (export, training data)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from ..chem.arrays import unpack, unpack_numbers
from ..chem.frames import FrameBatch, LabelColumns
from .levels import level_ids as lookup_level_ids
from .schema import Label, Structure


def iter_frames(reg, levels=None, structure_ids=None, *, labelled_only: bool = False,
                chunk: int = 10000):
    """Stored structures as :class:`FrameBatch` chunks (ordered by id) with ``ok`` labels.

    ``levels``: names of the levels whose labels to attach (default: every level);
    ``structure_ids``: restrict to these ids; ``labelled_only``: only structures with a
    label at one of ``levels``. Atoms are in the stored canonical order. Label columns
    hold NaN where a frame has no label (``present`` says which do) or where a label
    lacks that quantity; a quantity no label of the chunk has is ``None``.
    """
    with reg.session() as s:
        level_ids = lookup_level_ids(s, levels)
    ids = None if structure_ids is None else sorted({int(i) for i in structure_ids})
    last, pos = 0, 0
    while True:
        q = select(Structure.id, Structure.numbers, Structure.positions, Structure.cell,
                   Structure.pbc, Structure.charge, Structure.multiplicity,
                   Structure.source, Structure.info).order_by(Structure.id)
        if ids is not None:
            if pos >= len(ids):
                return
            q = q.where(Structure.id.in_(ids[pos: pos + chunk]))
            pos += chunk
        else:
            q = q.where(Structure.id > last).limit(chunk)
        if labelled_only:
            q = q.where(select(Label.id).where(
                Label.structure_id == Structure.id, Label.status == "ok",
                Label.level_id.in_(list(level_ids.values()))).exists())
        with reg.session() as s:
            rows = s.execute(q).all()
            if not rows and ids is None:
                return
            if not rows:
                continue
            last = rows[-1].id
            sids = [r.id for r in rows]
            labels = s.execute(
                select(Label.structure_id, Label.level_id, Label.energy, Label.forces,
                       Label.dipole, Label.charges, Label.stress)
                .where(Label.status == "ok", Label.level_id.in_(list(level_ids.values())),
                       Label.structure_id.in_(sids) if ids is not None
                       else Label.structure_id.between(sids[0], sids[-1]))).all()
        yield _frames_from_rows(rows, labels, level_ids)


def _frames_from_rows(rows, labels, level_ids: dict[str, int]) -> FrameBatch:
    """One FrameBatch from structure rows and their label rows."""
    numbers = [unpack_numbers(r.numbers) for r in rows]
    counts = np.array([len(z) for z in numbers], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cells = np.stack([unpack(r.cell, (3, 3)) if r.cell is not None else np.zeros((3, 3))
                      for r in rows]).astype(np.float64)
    pbc = np.array([[bool(r.pbc & bit) for bit in (1, 2, 4)] for r in rows], dtype=bool)
    batch = FrameBatch(
        numbers=np.concatenate(numbers),
        positions=np.concatenate([unpack(r.positions, (-1, 3)) for r in rows]),
        offsets=offsets, cells=cells, pbc=pbc,
        charge=np.array([r.charge for r in rows], dtype=np.int64),
        multiplicity=np.array([r.multiplicity for r in rows], dtype=np.int64),
        sources=[r.source for r in rows], infos=[r.info for r in rows],
        frame_names=[f"structure {r.id}" for r in rows])
    slot = {r.id: i for i, r in enumerate(rows)}
    by_level: dict[int, list] = {}
    for lab in labels:
        if lab.structure_id in slot:
            by_level.setdefault(lab.level_id, []).append(lab)
    b, n = len(rows), int(offsets[-1])
    for name, lid in level_ids.items():
        labs = by_level.get(lid)
        if not labs:
            continue
        cols = LabelColumns(present=np.zeros(b, dtype=bool))
        for field, shape, per_atom in (("energy", (), False), ("forces", (3,), True),
                                       ("dipole", (3,), False), ("charges", (), True),
                                       ("stress", (6,), False)):
            vals = [(slot[lab.structure_id], getattr(lab, field)) for lab in labs]
            if all(v is None for _, v in vals):
                continue
            arr = np.full(((n if per_atom else b), *shape), np.nan)
            for i, v in vals:
                if v is None:
                    continue
                if field == "energy":
                    arr[i] = v
                elif per_atom:
                    arr[offsets[i]: offsets[i + 1]] = unpack(v, (-1, *shape))
                else:
                    arr[i] = unpack(v, shape)
            setattr(cols, field, arr)
        cols.present[[slot[lab.structure_id] for lab in labs]] = True
        batch.labels[name] = cols
    return batch
