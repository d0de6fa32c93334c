"""Turn a validated :class:`FrameBatch` into rows: identity hashes, canonical atom order,
compositions, packed arrays and label hashes. Pure numpy; no database.

Two steps, so that ingest can prepare part k+1 while part k is written:
:func:`plan_batch` runs over the whole input (identity hashes, duplicate frames merged,
conflicting labels inside the input refused: everything that can make the input bad), then
:func:`prepare_part` builds the rows of structures ``lo:hi``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..chem.arrays import take
from ..chem.frames import FrameBatch, LabelColumns
from ..chem.identity import HASH_VERSION, hash_rows, structure_hashes
from ..errors import BadInput
from .compositions import Compositions, plan_compositions

_PBC_BITS = np.array([1, 2, 4])


@dataclass
class LabelRows:
    """Labels of one level for the unique structures of a batch (index into structures)."""

    level: str
    index: np.ndarray  # (L,) index into PreparedBatch structures
    hashes: list[str]
    energy: list[float | None]
    forces: list[bytes | bytearray | None]  # packed arrays: bytes, or bytearray for SQLite
    dipole: list[bytes | bytearray | None]
    charges: list[bytes | bytearray | None]
    stress: list[bytes | bytearray | None]
    max_force: list[float | None]  # max per-atom force norm, eV/Å
    status: str
    source_unit: str


@dataclass
class PreparedBatch:
    """Unique structures of a batch as column lists ready for insertion."""

    hashes: list[str]
    n_atoms: np.ndarray
    numbers: list[bytes | bytearray]  # bytes, or bytearray for SQLite (see prepare_part)
    positions: list[bytes | bytearray]
    cells: list[bytes | bytearray | None]
    pbc: np.ndarray
    nperiodic: np.ndarray
    charge: np.ndarray
    multiplicity: np.ndarray
    composition_id: np.ndarray  # database ids (see registry.ingest.compositions)
    sources: list[str | None]
    infos: list[str | None]  # JSON text
    labels: list[LabelRows]
    frames_in: int
    duplicates_in_input: int

    def __len__(self) -> int:
        return len(self.hashes)


def _split_bytes(arr: np.ndarray, offsets: np.ndarray, width: int, blob=bytes,
                 itemsize: int = 8) -> list:
    """Per-structure byte strings (of type ``blob``) of a (N, ...) array (float64, or already
    packed ``itemsize``-byte items) laid out by ``offsets``."""
    buf = blob(np.ascontiguousarray(arr, dtype="<f8") if itemsize == 8 else arr)
    step = itemsize * width
    ends = (offsets * step).tolist()
    return [buf[lo: hi] for lo, hi in zip(ends[:-1], ends[1:], strict=True)]


def _per_frame_bytes(arr: np.ndarray | None, b: int, blob=bytes) -> list:
    if arr is None:
        return [None] * b
    buf = np.ascontiguousarray(arr, dtype="<f8").reshape(b, -1)
    w = 8 * buf.shape[1]
    data = blob(buf)
    return [data[i: i + w] for i in range(0, b * w, w)]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(starts[i], starts[i] + lengths[i])``."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    shift = starts - np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(shift, lengths) + np.arange(total)


@dataclass
class Plan:
    """The whole-input pass of :func:`plan_batch`."""

    hashes: list[str]  # per frame
    hex: np.ndarray  # the same as S64 (label digests take them from here)
    numbers: np.ndarray  # (N,) int64, input order
    offsets: np.ndarray  # (B+1,) int64
    order: np.ndarray  # canonical atom permutation (within each frame's rows)
    keep: np.ndarray  # first frame of each distinct structure = structure slots, hash order
    levels: list[tuple[str, LabelColumns, np.ndarray, np.ndarray]]  # level, columns,
    # frames carrying it (one per structure) sorted by slot, and their slots
    duplicates_in_input: int
    compositions: Compositions  # of every frame (database ids set before writing)

    def __len__(self) -> int:
        return len(self.keep)


def plan_batch(batch: FrameBatch, compositions: Compositions | None = None) -> Plan:
    """Hash every frame, merge duplicate frames and refuse conflicting labels.

    Two frames of one structure carrying different labels for one level is bad input.
    ``compositions``: those of every frame (:func:`input_compositions`), if already made."""
    b = len(batch)
    offsets = batch.offsets.astype(np.int64)
    numbers = batch.numbers.astype(np.int64)
    hashes, order = structure_hashes(numbers, batch.positions, offsets,
                                     batch.cells.astype(np.float64), batch.pbc.astype(bool),
                                     np.asarray(batch.charge), np.asarray(batch.multiplicity),
                                     threads=2)
    # Distinct structures in hash order (one stable sort): the first frame of each run of
    # equal hashes is kept, the others point at it. Slots follow the hash, so the parts, and
    # the rows inside each, are written in the key order of the hash index (ids ascend with
    # it) without reordering.
    hex_h = np.array(hashes, dtype="S64")
    by_hash = np.argsort(hex_h, kind="stable")
    sorted_h = hex_h[by_hash]
    starts = np.ones(b, dtype=bool)
    starts[1:] = sorted_h[1:] != sorted_h[:-1]
    keep = by_hash[starts]
    dup_of = np.empty(b, dtype=np.int64)
    dup_of[by_hash] = keep[np.cumsum(starts) - 1]
    slot = np.full(b, -1, dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    unique_slot = slot[dup_of]
    levels = []
    for level, c in batch.labels.items():
        present = np.flatnonzero(c.present)
        roots = dup_of[present]
        uniq, first_idx, counts = np.unique(roots, return_index=True, return_counts=True)
        if len(uniq) < len(present):  # a structure carries this level in several frames
            check = present[np.isin(roots, uniq[counts > 1])]
            digests = _label_values(level, c, offsets, order, hex_h, check).digests
            seen: dict[int, tuple[int, str]] = {}
            for i, root, digest in zip(check.tolist(), dup_of[check].tolist(), digests,
                                       strict=True):
                j, d = seen.setdefault(root, (i, digest))
                if d != digest:
                    raise BadInput(
                        f"conflicting {level} labels for one structure inside the input: "
                        f"{batch.name(j)} and {batch.name(i)} are the same "
                        f"structure with different values")
        frames = present[first_idx]
        slots = unique_slot[frames]
        o = np.argsort(slots, kind="stable")
        levels.append((level, c, frames[o], slots[o]))
    return Plan(hashes, hex_h, numbers, offsets, order, keep, levels, b - len(keep),
                compositions if compositions is not None else input_compositions(batch))


def input_compositions(batch: FrameBatch) -> Compositions:
    """Compositions of every frame of ``batch`` (duplicate frames share theirs)."""
    return plan_compositions(batch.numbers, batch.offsets)


@dataclass
class _LabelValues:
    digests: list[str]
    energy: list
    forces: list
    dipole: list
    charges: list
    stress: list
    max_force: list


def _drop_absent(col: list | None, c: LabelColumns, name: str, frames) -> list | None:
    """``col`` with None where the frame does not carry the quantity (see LabelColumns.masks)."""
    mask = c.masks.get(name)
    if col is None or mask is None:
        return col
    keep = mask[frames].tolist()
    return [x if k else None for x, k in zip(col, keep, strict=True)]


def _label_values(level: str, c: LabelColumns, offsets, order, hex_hashes: np.ndarray,
                  frames: np.ndarray, blob=bytes) -> _LabelValues:
    """Packed values and label hashes of ``frames``. Label hash: sha256 over level name,
    structure hash and the packed values present (tags E, F, D, Q, S in that order), one
    contiguous message per label."""
    n = len(frames)
    if not n:
        return _LabelValues(*[[] for _ in range(7)])
    counts = np.diff(offsets)[frames]
    poff = np.concatenate([[0], np.cumsum(counts)])
    atoms = order[_ranges(offsets[frames], counts)]
    none = [None] * n
    f_all = c.forces[atoms] if c.forces is not None else None
    q_all = c.charges[atoms] if c.charges is not None else None
    f_b = _split_bytes(f_all, poff, 3, blob) if f_all is not None else None
    q_b = _split_bytes(q_all, poff, 1, blob) if q_all is not None else None
    d_b = _per_frame_bytes(c.dipole[frames], n, blob) if c.dipole is not None else None
    s_b = _per_frame_bytes(c.stress[frames], n, blob) if c.stress is not None else None
    f_b, q_b, d_b, s_b = (_drop_absent(col, c, name, frames) for col, name in (
        (f_b, "forces"), (q_b, "charges"), (d_b, "dipole"), (s_b, "stress")))
    # (tag, values, per atom, frames carrying it); energy is never masked
    quantities = []
    for tag, name, arr, per_atom in (("E", "energy", c.energy, False),
                                     ("F", "forces", f_all, True),
                                     ("D", "dipole", c.dipole, False),
                                     ("Q", "charges", q_all, True),
                                     ("S", "stress", c.stress, False)):
        if arr is not None:
            mask = c.masks.get(name)
            quantities.append((tag, arr, per_atom, np.ones(n, dtype=bool) if mask is None
                               else mask[frames].astype(bool)))
    digests = _label_digests(level, hex_hashes[frames], frames, counts, poff, quantities)
    fmax = none
    if c.forces is not None and n:
        with np.errstate(over="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", f_all, f_all))
        big = ~np.isfinite(norms)  # f.f overflowed (components beyond ~1e154): scale first
        if big.any():
            fb = f_all[big]
            top = np.abs(fb).max(axis=1)
            unit = fb / top[:, None]
            norms[big] = top * np.sqrt(np.einsum("ij,ij->i", unit, unit))
        fmax = np.maximum.reduceat(norms, poff[:-1]).astype(float).tolist()
        if "forces" in c.masks:
            fmax = [m if b is not None else None for m, b in zip(fmax, f_b, strict=True)]
    return _LabelValues(
        digests, c.energy[frames].astype(float).tolist() if c.energy is not None else none,
        f_b or none, d_b or none, q_b or none, s_b or none, fmax)


def label_digests(level: str, c: LabelColumns, offsets: np.ndarray, order: np.ndarray,
                  hex_hashes: np.ndarray, frames: np.ndarray) -> list[str]:
    """The label hashes of ``frames`` (see :func:`_label_values`), for comparing labels of
    one structure found in several frames."""
    return _label_values(level, c, offsets, order, hex_hashes, frames).digests


def _label_digests(level: str, hashes: np.ndarray, frames: np.ndarray, counts: np.ndarray,
                   poff: np.ndarray, quantities: list) -> list[str]:
    """sha256 per label over: level name + NUL, structure hash (hex), then for each quantity
    present in that frame its tag (E, F, D, Q, S, in that order) and little-endian float64
    bytes. ``quantities``: (tag, values, per atom, present per label).

    Labels with the same atom count and the same quantities present have messages of one
    length: each such group is assembled as one numpy block and hashed from slices."""
    n = len(frames)
    prefix = np.frombuffer(level.encode() + b"\0", dtype=np.uint8)
    hex_u8 = np.ascontiguousarray(hashes, dtype="S64").view(np.uint8).reshape(n, 64)
    q = len(quantities)
    pattern = np.zeros(n, dtype=np.int64)
    for bit, (_, _, _, present) in enumerate(quantities):
        pattern |= present.astype(np.int64) << bit
    key = counts.astype(np.int64) * (1 << q) + pattern
    out: list[str | None] = [None] * n
    for k in np.unique(key).tolist():
        rows = np.flatnonzero(key == k)
        m, nat, pat = len(rows), k >> q, k & ((1 << q) - 1)
        parts = [np.broadcast_to(prefix, (m, len(prefix))), hex_u8[rows]]
        atoms = poff[rows][:, None] + np.arange(nat)
        for bit, (tag, arr, per_atom, _) in enumerate(quantities):
            if pat >> bit & 1:
                v = arr[atoms] if per_atom else arr[frames[rows]]
                parts.append(np.full((m, 1), ord(tag), dtype=np.uint8))
                parts.append(np.ascontiguousarray(v, dtype="<f8").reshape(m, -1)
                             .view(np.uint8))
        for r, h in zip(rows.tolist(), hash_rows(parts), strict=True):
            out[r] = h
    return out


def prepare_part(batch: FrameBatch, plan: Plan, lo: int, hi: int,
                 blob: type = bytes) -> PreparedBatch:
    """Rows of distinct structures ``lo:hi`` (slots of ``plan``) and their labels; packed
    arrays as ``blob`` values (``bytearray`` for SQLite: its driver binds those without a
    pass through its adapter protocol). Needs the compositions' database ids
    (``plan.compositions.ids``)."""
    fr = plan.keep[lo:hi]
    m = len(fr)
    counts = np.diff(plan.offsets)[fr]
    poff = np.concatenate([[0], np.cumsum(counts)])
    atoms = plan.order[_ranges(plan.offsets[fr], counts)]
    numbers = plan.numbers[atoms]
    comps = plan.compositions
    cells = batch.cells[fr].astype(np.float64)
    pbc = batch.pbc[fr].astype(bool)
    has_cell = (pbc.any(axis=1) | cells.reshape(m, 9).any(axis=1)).tolist()
    cbuf = blob(cells.astype("<f8"))
    fl = fr.tolist()
    labels = []
    for level, c, frames, slots in plan.levels:
        a, b = np.searchsorted(slots, [lo, hi]).tolist()
        v = _label_values(level, c, plan.offsets, plan.order, plan.hex, frames[a:b],
                          blob)
        labels.append(LabelRows(level, slots[a:b] - lo, v.digests, v.energy, v.forces,
                                v.dipole, v.charges, v.stress, v.max_force, status=c.status,
                                source_unit=c.source_unit))
    sources = batch.sources
    infos = batch.infos
    return PreparedBatch(
        hashes=take(plan.hashes, fl),
        n_atoms=counts,
        numbers=_split_bytes(numbers.astype("<u1"), poff, 1, blob, itemsize=1),
        positions=_split_bytes(batch.positions[atoms], poff, 3, blob),
        cells=([cbuf[72 * k: 72 * k + 72] if has_cell[k] else None for k in range(m)]
               if any(has_cell) else [None] * m),
        pbc=(pbc * _PBC_BITS).sum(axis=1),
        nperiodic=pbc.sum(axis=1),
        charge=np.asarray(batch.charge)[fr],
        multiplicity=np.asarray(batch.multiplicity)[fr],
        composition_id=comps.ids[comps.of[fr]],
        sources=take(sources, fl) if sources else [None] * m,
        infos=[json.dumps(infos[i], sort_keys=True, default=str) if infos[i] else None
               for i in fl] if infos else [None] * m,
        labels=labels, frames_in=m, duplicates_in_input=0,
    )


__all__ = ["HASH_VERSION", "LabelRows", "Plan", "PreparedBatch", "input_compositions",
           "label_digests", "plan_batch", "prepare_part"]
