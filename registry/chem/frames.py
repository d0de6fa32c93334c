"""Columnar batches of frames (structures + optional labels), validated before any write."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BadInput
from .elements import MAX_Z
from .identity import coordinate_range_problem, slab_range_problem

# structures.charge and structures.multiplicity are SMALLINT columns (16-bit).
INT16_MAX = 32767

LABEL_FIELDS = ("energy", "forces", "dipole", "charges", "stress")


@dataclass
class LabelColumns:
    """Labels of one level of theory for the frames of a batch, in eV / Å / e.

    ``present[i]`` says whether frame i carries this level. Per-frame arrays have length B,
    per-atom arrays follow the batch's atom layout (N_total rows); absent arrays are None.
    """

    present: np.ndarray
    energy: np.ndarray | None = None
    forces: np.ndarray | None = None
    dipole: np.ndarray | None = None
    charges: np.ndarray | None = None
    stress: np.ndarray | None = None
    status: str = "ok"
    source_unit: str = "eV"
    # Per-frame presence of an optional quantity ("forces", "dipole", "charges", "stress")
    # when only some frames carry it (e.g. stress on crystals only); absent entries are NaN.
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def has(self, name: str) -> np.ndarray:
        """Per-frame bool: frame carries this level and the quantity ``name``."""
        if getattr(self, name) is None:
            return np.zeros(len(self.present), dtype=bool)
        mask = self.masks.get(name)
        return self.present if mask is None else self.present & mask


@dataclass
class FrameBatch:
    """A ragged batch: atoms of frame i are rows ``offsets[i]:offsets[i+1]``."""

    numbers: np.ndarray  # (N,) int
    positions: np.ndarray  # (N, 3) float64, Å
    offsets: np.ndarray  # (B+1,) int64
    cells: np.ndarray  # (B, 3, 3) float64
    pbc: np.ndarray  # (B, 3) bool
    charge: np.ndarray  # (B,) int
    multiplicity: np.ndarray  # (B,) int
    labels: dict[str, LabelColumns] = field(default_factory=dict)
    sources: list[str | None] | None = None
    infos: list[dict | None] | None = None
    frame_names: list[str] | None = None  # "file.xyz frame 12", for error messages

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    def name(self, i: int) -> str:
        return self.frame_names[i] if self.frame_names else f"frame {i}"

    def validate(self) -> None:
        """Raise BadInput naming the first bad frame; checks every array's shape and values."""
        b, n = len(self), int(self.offsets[-1]) if len(self.offsets) else 0
        if b == 0:
            raise BadInput("no frames to ingest (empty input)")
        _shape(self.numbers, (n,), "atomic numbers")
        _shape(self.positions, (n, 3), "positions")
        _shape(self.cells, (b, 3, 3), "cells")
        _shape(self.pbc, (b, 3), "pbc")
        counts = self.n_atoms
        if (counts <= 0).any():
            raise BadInput(f"{self.name(int(np.argmax(counts <= 0)))}: structure has no atoms")
        bad = (self.numbers < 1) | (self.numbers > MAX_Z)
        if bad.any():
            raise BadInput(f"{self._frame_of_atom(bad)}: unknown element with atomic number "
                           f"{int(self.numbers[np.argmax(bad)])}")
        _shape(np.asarray(self.charge), (b,), "total charges")
        _shape(np.asarray(self.multiplicity), (b,), "spin multiplicities")
        self._finite(self.positions, per_atom=True, what="positions")
        # A non-periodic frame's cell is stored too (when not all zero), so every cell counts.
        self._finite(self.cells, per_atom=False, what="cell vectors")
        self._raise(coordinate_range_problem(self.positions, self.offsets, self.cells))
        periodic = self.pbc.any(axis=1)
        if periodic.any():
            # The identity hash wraps positions with fractional coordinates (a solve with
            # the cell), so a periodic cell must be invertible.
            vol = np.abs(np.linalg.det(self.cells[periodic]))
            if (vol < 1e-6).any():
                k = int(np.argmax(vol < 1e-6))
                i = int(np.flatnonzero(periodic)[k])
                raise BadInput(f"{self.name(i)}: periodic cell has zero volume (|det| = "
                               f"{vol[k]:.3g} Å³): the identity hash wraps positions into the "
                               f"cell, so all three cell vectors must be independent")
            self._raise(slab_range_problem(self.positions, self.offsets, self.cells,
                                           self.pbc))
        self.charge = self._integers(self.charge, "total charge", -INT16_MAX - 1, INT16_MAX)
        self.multiplicity = self._integers(self.multiplicity, "spin multiplicity", 1,
                                           INT16_MAX)
        for level, cols in self.labels.items():
            self._validate_labels(level, cols)

    def _validate_labels(self, level: str, c: LabelColumns) -> None:
        b, n = len(self), int(self.offsets[-1])
        _shape(c.present, (b,), f"{level} presence mask")
        specs = {"energy": (b,), "forces": (n, 3), "dipole": (b, 3), "charges": (n,),
                 "stress": (b, 6)}
        for name, shape in specs.items():
            arr = getattr(c, name)
            if arr is None:
                continue
            _shape(arr, shape, f"{level} {name}")
            if name in c.masks:
                _shape(c.masks[name], (b,), f"{level} {name} presence mask")
            frames = c.has(name)
            mask = np.repeat(frames, self.n_atoms) if name in ("forces", "charges") else frames
            self._finite(arr, per_atom=name in ("forces", "charges"), what=f"{level} {name}",
                         mask=mask)

    def _finite(self, arr, *, per_atom, what, mask=None):
        ok = np.isfinite(arr)
        if ok.all():  # the common case, without a per-row reduction
            return
        if ok.ndim > 1:
            ok = ok.reshape(len(ok), -1).all(axis=1)
        if mask is not None:
            ok |= ~mask
        if not ok.all():
            where = self._frame_of_atom(~ok) if per_atom else self.name(int(np.argmax(~ok)))
            raise BadInput(f"{where}: {what} contain NaN or infinite values")

    def _raise(self, problem: tuple[int, str] | None) -> None:
        if problem is not None:
            raise BadInput(f"{self.name(problem[0])}: {problem[1]}")

    def _integers(self, arr, what: str, lo: int, hi: int) -> np.ndarray:
        """``arr`` as int64, refusing (naming the frame) a value that is not a whole number
        in [lo, hi]; whole floats (1.0) pass, nothing is rounded."""
        arr = np.asarray(arr)
        if arr.dtype.kind in "iu":
            bad = (arr < lo) | (arr > hi)
        elif arr.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(arr) | (arr != np.rint(arr)) | (arr < lo) | (arr > hi)
        else:  # Python objects (ints too large for int64, strings, ...) or bools
            bad = np.array([whole_number_problem(x, what, lo, hi) is not None
                            for x in arr.tolist()], dtype=bool)
        if bad.any():
            i = int(np.argmax(bad))
            value = arr[i].item() if hasattr(arr[i], "item") else arr[i]
            raise BadInput(f"{self.name(i)}: {whole_number_problem(value, what, lo, hi)}")
        return arr.astype(np.int64)

    def _frame_of_atom(self, atom_mask) -> str:
        atom = int(np.argmax(atom_mask))
        return self.name(int(np.searchsorted(self.offsets, atom, side="right") - 1))


def whole_number_problem(value, what: str, lo: int, hi: int) -> str | None:
    """Why ``value`` (a Python scalar) is not a whole number in [lo, hi], or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{what} {value!r} is not a number; expected a whole number"
    if isinstance(value, float) and not (np.isfinite(value) and value.is_integer()):
        return f"{what} {value!r} is not a whole number"
    if not lo <= value <= hi:
        shown = f"{value:g}" if isinstance(value, float) else value
        return f"{what} {shown} is out of range; expected {lo} to {hi}"
    return None


def _shape(arr, shape, what):
    if arr is None or tuple(arr.shape) != tuple(shape):
        got = None if arr is None else tuple(arr.shape)
        raise BadInput(f"{what}: expected shape {tuple(shape)}, got {got}")


def concat(batches: list[FrameBatch]) -> FrameBatch:
    """Concatenate batches (labels are aligned by level name; missing ones are absent)."""
    if len(batches) == 1:
        return batches[0]
    sizes = [b.offsets[-1] for b in batches]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = np.concatenate(
        [[0]] + [b.offsets[1:] + s for b, s in zip(batches, starts, strict=True)]
    )
    levels = {lv for b in batches for lv in b.labels}
    labels = {}
    for lv in sorted(levels):
        parts = [b.labels.get(lv) or _absent(b) for b in batches]
        cols, masks = {}, {}
        for name in LABEL_FIELDS:
            arrs = [getattr(p, name) for p in parts]
            if all(a is None for a in arrs):
                cols[name] = None
                continue
            cols[name] = np.concatenate(
                [a if a is not None else _nan_like(name, b) for a, b in zip(arrs, batches,
                                                                              strict=True)]
            )
            if name != "energy":
                mask = np.concatenate([p.has(name) for p in parts])
                if not mask[np.concatenate([p.present for p in parts])].all():
                    masks[name] = mask
        present = np.concatenate([p.present for p in parts])
        labels[lv] = LabelColumns(present=present, status=parts[0].status,
                                  source_unit=parts[0].source_unit, masks=masks, **cols)

    def cat_list(attr):
        vals = [getattr(b, attr) for b in batches]
        if all(v is None for v in vals):
            return None
        return [x for b, v in zip(batches, vals, strict=True) for x in (v or [None] * len(b))]

    return FrameBatch(
        numbers=np.concatenate([b.numbers for b in batches]),
        positions=np.concatenate([b.positions for b in batches]),
        offsets=offsets.astype(np.int64),
        cells=np.concatenate([b.cells for b in batches]),
        pbc=np.concatenate([b.pbc for b in batches]),
        charge=np.concatenate([b.charge for b in batches]),
        multiplicity=np.concatenate([b.multiplicity for b in batches]),
        labels=labels,
        sources=cat_list("sources"),
        infos=cat_list("infos"),
        frame_names=cat_list("frame_names"),
    )


def _absent(b: FrameBatch) -> LabelColumns:
    return LabelColumns(present=np.zeros(len(b), dtype=bool))


def _nan_like(name: str, b: FrameBatch) -> np.ndarray:
    n, nb = int(b.offsets[-1]), len(b)
    shape = {"energy": (nb,), "forces": (n, 3), "dipole": (nb, 3), "charges": (n,),
             "stress": (nb, 6)}[name]
    return np.full(shape, np.nan)
