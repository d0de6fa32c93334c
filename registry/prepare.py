"""Turn a validated :class:`FrameBatch` into rows: identity hashes, canonical atom order,
compositions, formulas, packed arrays and label hashes. Pure numpy; no database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .elements import compact_composition, formulas
from .errors import BadInput
from .frames import FrameBatch, LabelColumns
from .identity import HASH_VERSION, structure_hashes

_PBC_BITS = np.array([1, 2, 4])


@dataclass
class LabelRows:
    """Labels of one level for the unique structures of a batch (index into structures)."""

    level: str
    index: np.ndarray  # (L,) index into PreparedBatch structures
    hashes: list[str]
    energy: list[float | None]
    forces: list[bytes | None]
    dipole: list[bytes | None]
    charges: list[bytes | None]
    stress: list[bytes | None]
    max_force: list[float | None]  # max per-atom force norm, eV/Å
    status: str
    source_unit: str


@dataclass
class PreparedBatch:
    """Unique structures of a batch as column lists ready for insertion."""

    hashes: list[str]
    n_atoms: np.ndarray
    nelements: np.ndarray
    numbers: list[bytes]
    positions: list[bytes]
    cells: list[bytes | None]
    pbc: np.ndarray
    nperiodic: np.ndarray
    charge: np.ndarray
    multiplicity: np.ndarray
    hill: list[str]
    reduced: list[str]
    anonymous: list[str]
    sources: list[str | None]
    infos: list[str | None]  # JSON text
    elem_index: np.ndarray  # (E,) structure index of each structure_elements row
    elem_z: np.ndarray
    elem_count: np.ndarray
    labels: list[LabelRows]
    frames_in: int
    duplicates_in_input: int

    def __len__(self) -> int:
        return len(self.hashes)

    def slice(self, lo: int, hi: int) -> PreparedBatch:
        """Structures lo:hi with their elements and labels (indices rebased)."""
        e = (self.elem_index >= lo) & (self.elem_index < hi)
        labels = []
        for lr in self.labels:
            m = (lr.index >= lo) & (lr.index < hi)
            pick = np.flatnonzero(m)
            labels.append(LabelRows(
                lr.level, lr.index[m] - lo, *[[col[i] for i in pick] for col in (
                    lr.hashes, lr.energy, lr.forces, lr.dipole, lr.charges, lr.stress,
                    lr.max_force)],
                status=lr.status, source_unit=lr.source_unit))
        cut = slice(lo, hi)
        return PreparedBatch(
            self.hashes[cut], self.n_atoms[cut], self.nelements[cut], self.numbers[cut],
            self.positions[cut], self.cells[cut], self.pbc[cut], self.nperiodic[cut],
            self.charge[cut], self.multiplicity[cut], self.hill[cut], self.reduced[cut],
            self.anonymous[cut], self.sources[cut], self.infos[cut], self.elem_index[e] - lo,
            self.elem_z[e], self.elem_count[e], labels, hi - lo, 0)


def _split_bytes(arr: np.ndarray, offsets: np.ndarray, width: int) -> list[bytes]:
    """Per-structure byte strings of a (N, ...) float64 array laid out by ``offsets``."""
    buf = np.ascontiguousarray(arr, dtype="<f8").tobytes()
    step = 8 * width
    ends = (offsets * step).tolist()
    return [buf[lo: hi] for lo, hi in zip(ends[:-1], ends[1:], strict=True)]


def _per_frame_bytes(arr: np.ndarray | None, b: int) -> list[bytes | None]:
    if arr is None:
        return [None] * b
    buf = np.ascontiguousarray(arr, dtype="<f8").reshape(b, -1)
    w = 8 * buf.shape[1]
    data = buf.tobytes()
    return [data[i: i + w] for i in range(0, b * w, w)]


def _formulas(zs: np.ndarray, comp: np.ndarray) -> tuple[list[str], list[str], list[str]]:
    """Hill, reduced and anonymous formulas per row of a compact composition matrix
    (columns are atomic numbers ``zs``), computed once per distinct row."""
    if not len(comp):
        return [], [], []
    uniq, inv = np.unique(comp, axis=0, return_inverse=True)
    zs = zs.tolist()
    per = [formulas(tuple((z, c) for z, c in zip(zs, row, strict=True) if c))
           for row in uniq.tolist()]
    inv = inv.reshape(-1).tolist()
    return ([per[k][0] for k in inv], [per[k][1] for k in inv], [per[k][2] for k in inv])


def prepare(batch: FrameBatch) -> PreparedBatch:
    """Hash, canonicalise and pack a validated batch; merges duplicate frames.

    Two frames of one structure carrying different labels for one level is bad input.
    """
    b = len(batch)
    offsets = batch.offsets.astype(np.int64)
    numbers = batch.numbers.astype(np.int64)
    cells = batch.cells.astype(np.float64)
    pbc = batch.pbc.astype(bool)
    hashes, order = structure_hashes(numbers, batch.positions, offsets, cells, pbc,
                                     batch.charge, batch.multiplicity)
    numbers = numbers[order]
    positions = batch.positions[order]
    first: dict[str, int] = {}
    keep = []
    dup_of = np.arange(b)
    for i, h in enumerate(hashes):
        j = first.setdefault(h, i)
        if j == i:
            keep.append(i)
        else:
            dup_of[i] = j
    keep = np.asarray(keep, dtype=np.int64)
    slot = np.full(b, -1, dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    unique_slot = slot[dup_of]  # structure slot of every frame

    zs, comp = compact_composition(numbers, offsets)
    comp = comp[keep]
    elem_index, elem_col = np.nonzero(comp)
    elem_count = comp[elem_index, elem_col]
    elem_z = zs[elem_col]
    hill, reduced, anon = _formulas(zs, comp)

    numbers_u8 = numbers.astype("<u1")
    nb = numbers_u8.tobytes()
    all_pos = _split_bytes(positions, offsets, 3) if len(keep) < b else None
    periodic = pbc.any(axis=1)
    has_cell = (periodic | cells.reshape(b, 9).any(axis=1)).tolist()
    cbuf = cells.astype("<f8").tobytes()
    cell_bytes = [cbuf[72 * i: 72 * i + 72] if has_cell[i] else None for i in keep.tolist()]
    labels = [
        _label_rows(level, cols, batch, order, offsets, hashes, dup_of, unique_slot,
                    level)
        for level, cols in batch.labels.items()
    ]
    sources = batch.sources or [None] * b
    infos = batch.infos or [None] * b
    return PreparedBatch(
        hashes=[hashes[i] for i in keep],
        n_atoms=np.diff(offsets)[keep],
        nelements=(comp > 0).sum(axis=1),
        numbers=[nb[lo: hi] for lo, hi in zip(offsets[keep].tolist(), offsets[keep + 1].tolist(),
                                              strict=True)],
        positions=_split_bytes(positions, offsets, 3) if all_pos is None
        else [all_pos[i] for i in keep.tolist()],
        cells=cell_bytes,
        pbc=(pbc * _PBC_BITS).sum(axis=1)[keep],
        nperiodic=pbc.sum(axis=1)[keep],
        charge=np.asarray(batch.charge)[keep],
        multiplicity=np.asarray(batch.multiplicity)[keep],
        hill=hill, reduced=reduced, anonymous=anon,
        sources=[sources[i] for i in keep],
        infos=[json.dumps(infos[i], sort_keys=True, default=str) if infos[i] else None
               for i in keep],
        elem_index=elem_index, elem_z=elem_z, elem_count=elem_count,
        labels=labels, frames_in=b, duplicates_in_input=b - len(keep),
    )


def _label_rows(level, c: LabelColumns, batch, order, offsets, hashes, dup_of, unique_slot,
                level_name) -> LabelRows:
    """Label hash: sha256 over level name, structure hash and the packed values present
    (tags E, F, D, Q, S in that order), one contiguous message per label."""
    b = len(batch)
    forces = c.forces[order] if c.forces is not None else None
    charges = c.charges[order] if c.charges is not None else None
    f_all = _split_bytes(forces, offsets, 3) if forces is not None else None
    q_all = _split_bytes(charges, offsets, 1) if charges is not None else None
    d_all = _per_frame_bytes(c.dipole, b) if c.dipole is not None else None
    s_all = _per_frame_bytes(c.stress, b) if c.stress is not None else None
    e_all = _per_frame_bytes(c.energy[:, None], b) if c.energy is not None else None
    present = np.flatnonzero(c.present)
    p = present.tolist()
    n = len(p)
    pieces = [[level_name.encode() + b"\0"] * n, [hashes[i].encode() for i in p]]
    for tag, col in ((b"E", e_all), (b"F", f_all), (b"D", d_all), (b"Q", q_all),
                     (b"S", s_all)):
        if col is not None:
            pieces += [[tag] * n, [col[i] for i in p]]
    lens = np.zeros(n, dtype=np.int64)
    for col in pieces:
        lens += np.fromiter(map(len, col), dtype=np.int64, count=n)
    buf = memoryview(b"".join(chain.from_iterable(zip(*pieces, strict=True))))
    ends = np.cumsum(lens).tolist()
    sha = hashlib.sha256
    digests = [sha(buf[lo: hi]).hexdigest() for lo, hi in zip([0] + ends[:-1], ends,
                                                                  strict=True)]
    roots = dup_of[present]
    if len(np.unique(roots)) == n:  # no structure twice among these frames
        frames, lhashes = present, digests
    else:
        chosen: dict[int, int] = {}
        lhash: dict[int, str] = {}
        for i, root, digest in zip(p, roots.tolist(), digests, strict=True):
            if root in chosen:
                if lhash[root] != digest:
                    raise BadInput(
                        f"conflicting {level} labels for one structure inside the input: "
                        f"{batch.name(chosen[root])} and {batch.name(i)} are the same "
                        f"structure with different values")
                continue
            chosen[root] = i
            lhash[root] = digest
        frames = np.fromiter(chosen.values(), dtype=np.int64, count=len(chosen))
        lhashes = [lhash[r] for r in chosen]
    fmax = None
    if forces is not None and len(forces):
        norms = np.sqrt(np.einsum("ij,ij->i", forces, forces))
        fmax = np.maximum.reduceat(norms, offsets[:-1])
    fl = frames.tolist()
    none = [None] * len(fl)

    def pick(col):
        return none if col is None else [col[i] for i in fl]

    return LabelRows(
        level=level,
        index=unique_slot[frames],
        hashes=lhashes,
        energy=c.energy[frames].astype(float).tolist() if c.energy is not None else none,
        forces=pick(f_all), dipole=pick(d_all), charges=pick(q_all), stress=pick(s_all),
        max_force=fmax[frames].astype(float).tolist() if fmax is not None else none,
        status=c.status, source_unit=c.source_unit,
    )


__all__ = ["HASH_VERSION", "LabelRows", "PreparedBatch", "prepare"]
