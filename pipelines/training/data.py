"""Training data: a materialized dataset version as torch tensors, batched by size bucket.

:func:`training_data` turns :class:`registry.training_data.materialize.Materialized` into a
:class:`TrainingData`: one :class:`Group` of tensors per size bucket (and, for periodic
structures, per distinct cell, because a torchani batch shares one cell), every structure
with a global row number (bucket order, then order inside the bucket: the same on every
machine for a given version hash). Batches are slices of one group, so padding stays what
the buckets allow (at most 25 %).

Conventions (torchani's, with ``periodic_table_index=True``): ``species`` holds atomic numbers,
``-1`` for padding atoms; positions in Å. Targets are in eV: ``energy`` is the version's target
energy minus ``energy_ref`` (the sum of the target level's atomic reference energies, so a
network learns a small residual), ``forces`` in eV/Å (NaN rows where a label has none).
Shuffling uses a caller-seeded :class:`numpy.random.Generator`, nothing global.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")  # materialize's split codes 0, 1, 2


@dataclass
class Batch:
    """One batch: tensors on the training device."""

    species: object  # (B, n) long, atomic numbers, -1 = padding
    coordinates: object  # (B, n, 3)
    energy: object  # (B,) target eV (NaN: no energy)
    forces: object | None  # (B, n, 3) eV/Å, or None when not used
    n_atoms: object  # (B,) float, real atoms
    has_energy: object  # (B,) bool
    has_forces: object | None  # (B,) bool
    cell: object | None  # (3, 3) for a periodic group
    pbc: object | None  # (3,) bool
    index: np.ndarray  # (B,) global row numbers
    cached: object | None = None  # .aev_cache.CachedBatch: the AEVs (and Jacobians) cached


@dataclass
class Group:
    """Structures of one size bucket (and one cell when periodic), as numpy arrays."""

    index: np.ndarray  # (G,) global row numbers
    split: np.ndarray  # (G,) int8
    numbers: np.ndarray  # (G, n) int64, 0 = padding
    positions: np.ndarray  # (G, n, 3)
    energy: np.ndarray  # (G,) target eV
    forces: np.ndarray  # (G, n, 3)
    n_atoms: np.ndarray  # (G,)
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    _tensors: dict = field(default_factory=dict, repr=False)

    def tensors(self, device: str, dtype) -> dict:
        """The group's arrays as tensors on ``device`` (made once per device and dtype)."""
        import torch

        key = (str(device), str(dtype))
        if key not in self._tensors:
            species = np.where(self.numbers > 0, self.numbers, -1).astype(np.int64)
            f = np.nan_to_num(self.forces, nan=0.0)
            self._tensors[key] = {
                "species": torch.as_tensor(species, device=device),
                "coordinates": torch.as_tensor(self.positions, dtype=dtype, device=device),
                "energy": torch.as_tensor(np.nan_to_num(self.energy), dtype=dtype,
                                          device=device),
                "forces": torch.as_tensor(f, dtype=dtype, device=device),
                "n_atoms": torch.as_tensor(self.n_atoms, dtype=dtype, device=device),
                "has_energy": torch.as_tensor(np.isfinite(self.energy), device=device),
                "has_forces": torch.as_tensor(self.has_forces(), device=device),
                "cell": None if self.cell is None else torch.as_tensor(
                    self.cell, dtype=dtype, device=device),
                "pbc": None if self.pbc is None else torch.as_tensor(self.pbc, device=device),
            }
        return self._tensors[key]

    def has_forces(self) -> np.ndarray:
        """(G,) True where every real atom has finite forces."""
        real = self.numbers > 0
        ok = np.isfinite(self.forces).all(axis=2) | ~real
        return ok.all(axis=1) & real.any(axis=1)


@dataclass
class TrainingData:
    """A dataset version's arrays grouped for batching; see the module docstring."""

    ref: str
    hash: str
    levels: list[str]
    target: str
    groups: list[Group]
    n_structures: int
    energy_ref: np.ndarray  # (N,) eV, by global row
    n_atoms: np.ndarray  # (N,)
    split: np.ndarray  # (N,)
    missing_reference_elements: list[str]

    # -- what the data holds --------------------------------------------------------------
    @property
    def elements(self) -> list[int]:
        """Atomic numbers present in any split, sorted."""
        zs = set()
        for g in self.groups:
            zs.update(np.unique(g.numbers[g.numbers > 0]).tolist())
        return sorted(int(z) for z in zs)

    def count(self, split: str) -> int:
        return int((self.split == SPLITS.index(split)).sum())

    def n_with_energy(self, split: str | None = None) -> int:
        return sum(int((np.isfinite(g.energy) & self._mask(g, split)).sum())
                   for g in self.groups)

    def n_with_forces(self, split: str | None = None) -> int:
        return sum(int((g.has_forces() & self._mask(g, split)).sum()) for g in self.groups)

    @property
    def periodic(self) -> bool:
        return any(g.pbc is not None for g in self.groups)

    @staticmethod
    def _mask(g: Group, split: str | None) -> np.ndarray:
        return np.ones(len(g.index), bool) if split is None else g.split == SPLITS.index(split)

    # -- arrays by global row ------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        """A per-structure array of every group, in global row order."""
        out = None
        for g in self.groups:
            v = getattr(g, name)
            if out is None:
                out = np.empty((self.n_structures, *v.shape[1:]), dtype=v.dtype)
            out[g.index] = v
        return out

    def atom_offsets(self) -> np.ndarray:
        """(N + 1,) start of each structure's atoms in flat per-atom arrays (global order)."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)

    def flat_forces(self) -> np.ndarray:
        """(M, 3) reference forces of every real atom, structures in global order."""
        off = self.atom_offsets()
        out = np.full((int(off[-1]), 3), np.nan)
        for g in self.groups:
            for i, row in enumerate(g.index):
                out[off[row]:off[row + 1]] = g.forces[i, :g.n_atoms[i]]
        return out

    def atom_sum(self, table: np.ndarray) -> np.ndarray:
        """(N,) sum over each structure's atoms of ``table[Z]`` (``table[0]`` must be 0)."""
        out = np.zeros(self.n_structures)
        for g in self.groups:
            out[g.index] = table[g.numbers].sum(axis=1)
        return out

    def composition_matrix(self, elements: list[int]) -> np.ndarray:
        """(N, E) count of each element of ``elements`` per structure (global order)."""
        out = np.zeros((self.n_structures, len(elements)))
        col = {z: k for k, z in enumerate(elements)}
        for g in self.groups:
            for z in np.unique(g.numbers[g.numbers > 0]):
                out[g.index, col[int(z)]] = (g.numbers == z).sum(axis=1)
        return out

    # -- batches ---------------------------------------------------------------------------
    def batches(self, split: str | None, batch_size: int, *, device: str = "cpu",
                dtype=None, rng: np.random.Generator | None = None,
                forces: bool = False, features=None) -> list[Batch]:
        """Batches of ``split`` (None: all), each from one group; shuffled with ``rng``
        (structures inside a group, then the order of all batches), else in global order.
        ``features``: an :class:`.aev_cache.Features` of this data, whose tensors each batch
        then carries (``Batch.cached``)."""
        import torch

        dtype = dtype or torch.float32
        plan = []
        for gi, g in enumerate(self.groups):
            rows = np.flatnonzero(self._mask(g, split))
            if rng is not None:
                rows = rows[rng.permutation(len(rows))]
            plan += [(gi, rows[lo:lo + batch_size]) for lo in range(0, len(rows), batch_size)]
        if rng is not None:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        # trim padding a batch does not need
        widths = [int(self.groups[gi].n_atoms[rows].max()) for gi, rows in plan]
        cached = [None] * len(plan) if features is None else \
            features.batches([(gi, rows, w) for (gi, rows), w in zip(plan, widths, strict=True)])
        out = []
        for (gi, rows), width, c in zip(plan, widths, cached, strict=True):
            g = self.groups[gi]
            t = g.tensors(device, dtype)
            sel = torch.as_tensor(rows, device=device)
            out.append(Batch(
                species=t["species"][sel, :width], coordinates=t["coordinates"][sel, :width],
                energy=t["energy"][sel], n_atoms=t["n_atoms"][sel],
                has_energy=t["has_energy"][sel],
                forces=t["forces"][sel, :width] if forces else None,
                has_forces=t["has_forces"][sel] if forces else None,
                cell=t["cell"], pbc=t["pbc"], index=g.index[rows],
                cached=c))
        return out


def training_data(mat) -> TrainingData:
    """Group a :class:`Materialized` version's buckets (see the module docstring)."""
    groups: list[Group] = []
    start = 0
    energy_ref, n_atoms, split = [], [], []
    for b in mat.buckets:
        nb = len(b["structure_id"])
        index = np.arange(start, start + nb)
        start += nb
        energy_ref.append(np.asarray(b["energy_ref"], dtype=np.float64))
        n_atoms.append(np.asarray(b["n_atoms"], dtype=np.int64))
        split.append(np.asarray(b["split"], dtype=np.int8))
        pbc = np.asarray(b["pbc"], dtype=bool)
        periodic = pbc.any(axis=1)
        energy = np.asarray(b["energy"], dtype=np.float64) - energy_ref[-1]
        forces = np.asarray(b["forces"], dtype=np.float64) if "forces" in b else \
            np.full(b["positions"].shape, np.nan)
        keys = {}
        for i in range(nb):
            key = (b["cell"][i].tobytes() + pbc[i].tobytes()) if periodic[i] else b""
            keys.setdefault(key, []).append(i)
        for key, rows in keys.items():
            rows = np.asarray(rows)
            groups.append(Group(
                index=index[rows], split=split[-1][rows],
                numbers=np.asarray(b["numbers"][rows], dtype=np.int64),
                positions=np.asarray(b["positions"][rows], dtype=np.float64),
                energy=energy[rows], forces=forces[rows], n_atoms=n_atoms[-1][rows],
                cell=np.asarray(b["cell"][rows[0]], dtype=np.float64) if key else None,
                pbc=pbc[rows[0]].copy() if key else None))
    return TrainingData(mat.ref, mat.hash, list(mat.levels), mat.target, groups, start,
                        _cat(energy_ref, np.float64), _cat(n_atoms, np.int64),
                        _cat(split, np.int8), list(mat.missing_reference_elements))


def _cat(parts: list, dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def fit_element_shifts(data: TrainingData, elements: list[int]) -> dict[int, float]:
    """Per-element energies (eV) that best fit the training split's target energies as a
    sum over atoms (least squares, minimum norm when compositions are collinear): ANI's
    self-atomic energies, so the networks start from a small residual."""
    train = (data.split == 0) & np.isfinite(data.column("energy"))
    if not train.any():
        return dict.fromkeys(elements, 0.0)
    a = data.composition_matrix(elements)[train]
    coef, *_ = np.linalg.lstsq(a, data.column("energy")[train], rcond=None)
    return {z: float(c) for z, c in zip(elements, coef, strict=True)}
