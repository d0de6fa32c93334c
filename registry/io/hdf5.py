"""The ANI / pyanitools HDF5 layout: read into a :class:`FrameBatch`, write from batches.

A *molecule group* (at any depth) holds conformers of one atom sequence:

| dataset        | shape     | meaning                                                  |
|----------------|-----------|----------------------------------------------------------|
| `species`      | (N,)      | symbols (bytes/str) or atomic numbers (or `atomic_numbers`) |
| `coordinates`  | (C, N, 3) | positions, Å                                             |
| `energies`     | (C,)      | energy (unit from `--units`, default eV; NaN = no label)   |
| `forces`       | (C, N, 3) | forces (energy unit / Å), optional                       |
| `dipoles`      | (C, 3)    | dipole, e·Å, optional                                    |
| `charges`      | (C, N)    | partial charges, e, optional                             |
| `stresses`     | (C, 6)    | stress, Voigt (energy unit / Å³), optional                |
| `cells`, `pbc` | (C, 3, 3), (C, 3) | periodic cell and flags, optional (default none)  |
| `total_charge`, `multiplicity` | (C,) | default 0 and 1                                |

Other label datasets are chosen with ``--energy-key`` (e.g. ``energies_ccsd_t_cbs`` or
ANI-1x's ``ccsd(t)_cbs.energy``); forces etc. default to the energy key's companions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import h5py
import numpy as np
from h5py import h5d, h5g, h5l, h5o, h5s, h5t

from ..chem.elements import SYMBOLS, composition_matrix, composition_of, formulas, symbol_to_z
from ..chem.frames import FrameBatch, LabelColumns, concat
from ..chem.units import energy_factor
from ..errors import BadInput
from .atoms import companion_key

_DEFAULT = {"forces": "forces", "dipole": "dipoles", "charges": "charges",
            "stress": "stresses"}
_LABEL_SHAPES = {"forces": (-1, 3), "dipole": (3,), "charges": (-1,), "stress": (6,)}


def iter_ani_h5(path: str, opts, size: int, report) -> Iterator[FrameBatch]:
    """Batches of about ``size`` frames (whole molecule groups) of an ANI HDF5 file.

    Each group's datasets are read whole, one call each, through h5py's low-level API (the
    high-level ``Group``/``Dataset`` objects cost more than the read itself for groups of a
    few hundred conformers). ``report.frames`` / ``report.skipped`` count what was read.
    """
    for _, batch in iter_ani_h5_chunks(path, opts, size, report):
        if batch is not None:
            yield batch


def iter_ani_h5_chunks(path: str, opts, size: int, report,
                       share: tuple[int, int] | None = None
                       ) -> Iterator[tuple[int, FrameBatch | None]]:
    """``(chunk index, batch)`` of the file's chunks: runs of whole molecule groups that end
    once they hold ``size`` conformers of the file (skipped ones included), so the
    boundaries follow from the datasets' shapes alone. ``share=(w, n)``: only the chunks
    ``k`` with ``k % n == w`` are read (the other groups' shapes only), for ``n`` processes
    reading one file; each of those chunks is yielded, as ``None`` when all its frames were
    skipped, and "no frames at all" is then the caller's check."""
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read HDF5 ({exc}); the file may be truncated or "
                       f"corrupt") from None
    with fh:
        _small_metadata_cache(fh)
        try:
            yield from _chunks(fh, path, opts, size, report, share)
        except OSError as exc:
            raise BadInput(f"{path}: cannot read HDF5 ({exc}); the file may be truncated or "
                           f"corrupt") from None


def _small_metadata_cache(fh, size: int = 4 << 20) -> None:
    """Cap HDF5's metadata cache: by default it grows (to 32 MiB of entries, ~10x that in
    memory: +190 MiB over a 1,000,000-conformer file) as a file's datasets are opened; each
    is read once here, so that memory would grow with the file, not the batch."""
    cfg = fh.id.get_mdc_config()
    cfg.set_initial_size = True
    cfg.initial_size = cfg.max_size = size
    cfg.min_size = min(cfg.min_size, size)
    fh.id.set_mdc_config(cfg)


# Datasets of a molecule group, not looked into for subgroups (asking each member's type
# costs more than reading the group); other members are.
_DATASETS = {"species", "atomic_numbers", "coordinates", "energies", "forces", "dipoles",
             "charges", "stresses", "cells", "pbc", "total_charge", "multiplicity"}


def _groups(fh) -> Iterator[tuple[str, object, set[str]]]:
    """(name, low-level group id, member names) of every molecule group (one holding
    ``coordinates``), depth first in name order, each object once, through hard links only,
    as ``visititems`` lists them. Groups are opened as the walk reaches them, not all at
    once: each open group pins its metadata in HDF5's cache."""
    seen = {h5o.get_info(fh.id).addr}

    def walk(name: str, gid):
        raw: list[bytes] = []
        gid.links.iterate(raw.append)
        members = [m.decode() for m in raw]
        molecule = "coordinates" in members
        if molecule:
            yield name or "/", gid, set(members)
        for m, b in zip(members, raw, strict=True):
            if molecule and m in _DATASETS:
                continue
            try:
                if gid.links.get_info(b).type != h5l.TYPE_HARD:
                    continue
                sub = h5g.open(gid, b)
            except (KeyError, OSError, RuntimeError, ValueError):  # not a group
                continue
            addr = h5o.get_info(sub).addr
            if addr not in seen:  # hard links can make cycles
                seen.add(addr)
                yield from walk(f"{name}/{m}", sub)

    yield from walk("", fh.id)


_MEMORY_TYPES: dict[np.dtype, object] = {}


def _read(gid, key: str, name: str, path: str, as_float: bool = False) -> np.ndarray:
    """A whole dataset: numbers and fixed-length text by one low-level read, anything else
    (variable-length strings) through h5py. ``as_float``: numbers are read as float64 by
    HDF5's own conversion, without asking the stored type. The memory type is given, not
    derived from the array on each read: at a few hundred conformers per group, h5py's
    per-call overheads cost more than reading the data."""
    try:
        did = h5d.open(gid, key.encode())
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise BadInput(f"{path} group {name}: {key} is not a readable dataset ({exc})") \
            from None
    if as_float:
        arr = np.empty(did.shape, dtype=np.float64)
        try:
            if arr.size:
                did.read(h5s.ALL, h5s.ALL, arr, h5t.NATIVE_DOUBLE)
            return arr
        except (TypeError, ValueError, OSError):  # not numbers: read as stored
            pass
    dtype = did.dtype
    if dtype.kind in "iufS":
        arr = np.empty(did.shape, dtype=dtype)
        if arr.size:
            mtype = _MEMORY_TYPES.get(dtype)
            if mtype is None:
                mtype = _MEMORY_TYPES[dtype] = h5t.py_create(dtype)
            did.read(h5s.ALL, h5s.ALL, arr, mtype)
        return arr
    return h5py.Dataset(did)[()]


_Z: dict[bytes | str, int] = {}  # symbol as stored -> atomic number


def _z_of(symbol: bytes | str) -> int:
    z = symbol_to_z((symbol.decode() if isinstance(symbol, bytes) else str(symbol)).strip())
    _Z[symbol] = z
    return z


def _species(gid, name, members, path, n_conf, n_atoms) -> np.ndarray:
    """(C, N) atomic numbers of a group."""
    key = "species" if "species" in members else "atomic_numbers" \
        if "atomic_numbers" in members else None
    if key is None:
        raise BadInput(f"{path} group {name}: no 'species' (or 'atomic_numbers') dataset")
    raw = np.asarray(_read(gid, key, name, path))
    if raw.dtype.kind in "SOU":
        try:
            z = np.array([_Z.get(s) or _z_of(s) for s in raw.reshape(-1).tolist()],
                         dtype=np.int64).reshape(raw.shape)
        except BadInput as exc:
            raise BadInput(f"{path} group {name}: {exc}") from None
    elif raw.dtype.kind in "iu":
        z = raw.astype(np.int64)
    else:
        raise BadInput(f"{path} group {name}: {key} has dtype {raw.dtype}, expected "
                       f"symbols or atomic numbers")
    if z.shape == (n_atoms,):
        return np.broadcast_to(z, (n_conf, n_atoms))
    if z.shape != (n_conf, n_atoms):
        raise BadInput(f"{path} group {name}: {key} has shape {z.shape}, expected "
                       f"({n_atoms},) for coordinates of shape ({n_conf}, {n_atoms}, 3)")
    return z


def _dataset(gid, name, key, shape, path, what):
    arr = np.asarray(_read(gid, key, name, path, as_float=True), dtype=np.float64)
    if what == "stress" and arr.shape[1:] == (3, 3):
        arr = arr[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if arr.shape != shape:
        raise BadInput(f"{path} group {name}: {key} has shape {arr.shape}, expected {shape}")
    return arr


def _numbers(gid, name, key, c, path) -> np.ndarray:
    """A per-conformer number dataset (C,): int64 or float64 as stored, else BadInput."""
    arr = np.asarray(_read(gid, key, name, path))
    if arr.dtype.kind not in "iuf":
        raise BadInput(f"{path} group {name}: {key} has dtype {arr.dtype}, expected numbers")
    if arr.shape != (c,):
        raise BadInput(f"{path} group {name}: {key} has shape {arr.shape}, expected ({c},)")
    return arr.astype({"f": np.float64, "i": np.int64, "u": np.uint64}[arr.dtype.kind])


def _conformers(gid) -> int:
    """A group's conformer count from its coordinates' shape alone (0 when unreadable: the
    process reading that group reports why)."""
    try:
        shape = h5d.open(gid, b"coordinates").shape
    except (KeyError, OSError, RuntimeError, ValueError):
        return 0
    return int(shape[0]) if len(shape) == 3 else 0


def _chunks(fh, path: str, opts, size: int, report,
            share: tuple[int, int] | None = None
            ) -> Iterator[tuple[int, FrameBatch | None]]:
    level = opts.level
    factor = energy_factor(opts.units) if level else 1.0
    ekey = opts.energy_key or "energies"
    explicit = {"forces": opts.forces_key, "dipole": opts.dipole_key,
                "charges": opts.charges_key, "stress": opts.stress_key}
    keys = {q: k or companion_key(ekey, q) or _DEFAULT[q] for q, k in explicit.items()}
    parts, pending, frame, found = [], 0, 0, False
    chunk, in_chunk = 0, 0  # chunk index, conformers of the file in it so far
    for name, gid, members in _groups(fh):
        found = True
        if share is not None and chunk % share[1] != share[0]:
            c = _conformers(gid)  # another process reads this group
        else:
            c, part = _group(gid, name, members, path, frame, level, factor, ekey, explicit,
                             keys, opts, report)
            if part is not None:
                parts += part
                pending += sum(len(p["pos"]) for p in part)
        frame += c
        in_chunk += c
        if in_chunk >= size:
            if parts or share is not None and chunk % share[1] == share[0]:
                yield chunk, _batch_of(parts, level, opts, path) if parts else None
                report.frames += pending
            parts, pending, in_chunk = [], 0, 0
            chunk += 1
    if parts or share is not None and in_chunk and chunk % share[1] == share[0]:
        yield chunk, _batch_of(parts, level, opts, path) if parts else None
        report.frames += pending
    if not found:
        raise BadInput(no_groups_message(path))
    if share is None and not report.frames:
        raise BadInput(no_frames_message(path, report.skipped))


def no_groups_message(path: str) -> str:
    return (f"{path}: no ANI molecule groups (groups with 'coordinates' and 'species') in "
            f"the file")


def no_frames_message(path: str, skipped: int) -> str:
    return f"{path}: no frames to ingest ({skipped} skipped)"


def _group(gid, name, members, path, frame, level, factor, ekey, explicit, keys, opts,
           report) -> tuple[int, list[dict] | None]:
    """(conformers, parts) of one molecule group; parts None when all are skipped."""
    coords = np.asarray(_read(gid, "coordinates", name, path, as_float=True),
                        dtype=np.float64)
    if coords.ndim != 3 or coords.shape[2] != 3:
        raise BadInput(f"{path} group {name}: coordinates have shape {coords.shape}, "
                       f"expected (conformers, atoms, 3)")
    c, n = coords.shape[:2]
    names = [f"{path} frame {frame + i} ({name}[{i}])" for i in range(c)]
    part = {"z": _species(gid, name, members, path, c, n), "pos": coords, "names": names,
            "cells": _dataset(gid, name, "cells", (c, 3, 3), path, "cells")
            if "cells" in members else np.zeros((c, 3, 3)),
            "pbc": np.asarray(_read(gid, "pbc", name, path), dtype=bool) if "pbc" in members
            else np.zeros((c, 3), dtype=bool),
            # Kept as read (float or int): FrameBatch.validate refuses, naming the frame,
            # a value that is not a whole number instead of truncating it.
            "charge": _numbers(gid, name, "total_charge", c, path)
            if "total_charge" in members else np.zeros(c, dtype=np.int64),
            "mult": _numbers(gid, name, "multiplicity", c, path)
            if "multiplicity" in members else np.ones(c, dtype=np.int64)}
    if len(part["pbc"]) != c:
        raise BadInput(f"{path} group {name}: pbc has {len(part['pbc'])} rows, "
                       f"expected {c}")
    keep = np.ones(c, dtype=bool)
    if level:
        missing = [ekey] if ekey not in members else []
        missing += [k for q, k in explicit.items() if k and k not in members]
        if missing:
            if not opts.skip_missing:
                raise BadInput(f"{path} group {name}: missing "
                               f"{', '.join(repr(m) for m in missing)} for level "
                               f"{level!r} (use --skip-missing to skip such groups)")
            report.skipped += c
            return c, None
        part["energy"] = _dataset(gid, name, ekey, (c,), path, "energy") * factor
        if opts.skip_missing:  # NaN energy: no label at this level for that conformer
            keep = ~np.isnan(part["energy"])
        for q, key in keys.items():
            if key in members:
                shape = tuple(n if s == -1 else s for s in _LABEL_SHAPES[q])
                arr = _dataset(gid, name, key, (c, *shape), path, q)
                part[q] = arr * factor if q in ("forces", "stress") else arr
    report.skipped += int((~keep).sum())
    if not keep.any():
        return c, None
    return c, _split_absent(_select(part, keep) if not keep.all() else part)


def _batch_of(parts: list[dict], level, opts, path: str) -> FrameBatch:
    """One batch of ``parts``: frames with the same label quantities (e.g. forces or not)
    are put together, those carrying only some are masked (``LabelColumns.masks``)."""
    groups: dict[tuple, list[dict]] = {}
    for p in parts:
        groups.setdefault(tuple(q for q in _DEFAULT if q in p), []).append(p)
    return concat([_to_batch(g, level, opts, path) for g in groups.values()])


def _split_absent(part: dict) -> list[dict]:
    """Split a group's conformers by which optional quantities they have (all-NaN = absent)."""
    if not any(np.isnan(part[q].sum()) for q in _DEFAULT if q in part):
        return [part]  # no NaN anywhere (a sum is NaN if any term is): the usual case
    has = {q: ~np.isnan(part[q].reshape(len(part[q]), -1)).all(axis=1)
           for q in _DEFAULT if q in part}
    if all(h.all() for h in has.values()):
        return [part]
    sig = np.array([sum(1 << k for k, h in enumerate(has.values()) if h[i])
                    for i in range(len(part["pos"]))])
    out = []
    for value in np.unique(sig):
        sub = _select(part, sig == value)
        for q, h in has.items():
            if not h[sig == value][0]:
                del sub[q]
        out.append(sub)
    return out


def _select(part: dict, keep: np.ndarray) -> dict:
    out = {}
    for k, v in part.items():
        out[k] = [x for x, m in zip(v, keep, strict=True) if m] if k == "names" else v[keep]
    return out


def _to_batch(parts: list[dict], level, opts, path: str) -> FrameBatch:
    counts = np.concatenate([np.full(len(p["pos"]), p["pos"].shape[1]) for p in parts])
    batch = FrameBatch(
        numbers=np.concatenate([p["z"].reshape(-1) for p in parts]),
        positions=np.concatenate([p["pos"].reshape(-1, 3) for p in parts]),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        cells=np.concatenate([p["cells"] for p in parts]),
        pbc=np.concatenate([p["pbc"] for p in parts]),
        charge=np.concatenate([p["charge"] for p in parts]),
        multiplicity=np.concatenate([p["mult"] for p in parts]),
        frame_names=[s for p in parts for s in p["names"]])
    batch.sources = [opts.source if opts.source is not None else path] * len(batch)
    if not level:
        return batch
    cols = {"energy": np.concatenate([p["energy"] for p in parts])}
    for q in ("forces", "dipole", "charges", "stress"):
        if q not in parts[0]:
            continue
        per_atom = q in ("forces", "charges")
        cols[q] = np.concatenate([p[q].reshape(-1, *p[q].shape[2:]) if per_atom else p[q]
                                  for p in parts])
    batch.labels[level] = LabelColumns(present=np.ones(len(batch), dtype=bool),
                                       source_unit=opts.units, **cols)
    return batch


class AniH5Writer:
    """Append FrameBatch chunks to an ANI HDF5 file, one group per Hill formula.

    Atoms are in the registry's canonical order (sorted by element), so every structure of
    one composition has the same species sequence. ``suffixes`` maps level -> dataset suffix
    (``energies<suffix>``, ``forces<suffix>``, ``dipoles<suffix>``, ``charges<suffix>``,
    ``stresses<suffix>``); absent values are NaN.
    """

    def __init__(self, path: str, suffixes: dict[str, str]):
        self.fh = h5py.File(path, "w")
        self.suffixes = suffixes
        self.fh.attrs["layout"] = "ani"
        self.fh.attrs["units"] = json.dumps({"energy": "eV", "length": "Angstrom",
                                             "charge": "e"})
        self.fh.attrs["levels"] = json.dumps(suffixes)
        self.rows: dict[str, int] = {}

    def write(self, batch: FrameBatch) -> None:
        comp = composition_matrix(batch.numbers, batch.offsets)
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(comp):
            groups.setdefault(formulas(composition_of(row))[0], []).append(i)
        for name, idx in groups.items():
            self._append(name, batch, np.asarray(idx))

    def _append(self, name: str, batch: FrameBatch, idx: np.ndarray) -> None:
        off = batch.offsets
        n = int(off[idx[0] + 1] - off[idx[0]])
        atoms = (off[idx][:, None] + np.arange(n)).reshape(-1)
        c = len(idx)
        data = {"coordinates": batch.positions[atoms].reshape(c, n, 3),
                "cells": batch.cells[idx], "pbc": batch.pbc[idx],
                "total_charge": np.asarray(batch.charge)[idx].astype(np.int32),
                "multiplicity": np.asarray(batch.multiplicity)[idx].astype(np.int32)}
        for level, sfx in self.suffixes.items():
            cols = batch.labels.get(level)
            energy = np.full(c, np.nan)
            if cols is not None:
                energy = np.where(cols.present[idx], cols.energy[idx], np.nan)
                for q, plural in _DEFAULT.items():
                    arr = getattr(cols, q)
                    if arr is None:
                        continue
                    arr = (arr[atoms].reshape(c, n, *arr.shape[1:])
                           if q in ("forces", "charges") else arr[idx])
                    if not np.isnan(arr).all():  # absent values stay NaN (the fill value)
                        data[plural + sfx] = arr
            data["energies" + sfx] = energy
        if name not in self.fh:
            g = self.fh.create_group(name)
            g.create_dataset("species", data=np.array(
                [SYMBOLS[z].encode() for z in batch.numbers[atoms[:n]]]))
            self.rows[name] = 0
        g, start = self.fh[name], self.rows[name]
        for key in set(data) | {k for k in g if k != "species"}:
            if key in g:
                ds = g[key]
                ds.resize(start + c, axis=0)
            else:
                value = data[key]
                ds = g.create_dataset(key, shape=(start + c, *value.shape[1:]),
                                      maxshape=(None, *value.shape[1:]), dtype=value.dtype,
                                      chunks=True, fillvalue=_fill(value.dtype))
            ds[start:] = data[key] if key in data else _fill(ds.dtype)
        self.rows[name] = start + c

    def close(self) -> None:
        self.fh.close()


def _fill(dtype):
    return np.nan if np.dtype(dtype).kind == "f" else 0
