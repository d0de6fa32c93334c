"""The atomic environments of dataset versions: one row per atom, each structure once.

Rows come from each version's materialized arrays (:func:`registry.Registry.materialize`,
cached by version hash), in the order of the training data (:mod:`pipelines.training.data`:
bucket, then position), so a Dask task that materializes the same version finds the same
structure at the same row. A structure held by several of the versions analysed is one set of
rows (its environments do not change), marked as a member of each (``member``); its label for
colouring by dataset is the first of the versions given that holds it.

Iteration (:func:`structure_iterations`): in a version an active-learning campaign made, a
structure labelled by the campaign's iteration ``k`` is iteration ``k + 1`` and the campaign's
starting data are iteration 0, from the campaign's tables (so ``k`` also numbers the version
of the campaign's dataset that added it). In any other version ``v`` of a dataset ``D``, it
is the first version ``k ≤ v`` of ``D`` that holds it (``D:1`` is iteration 1, the structures
``D:2`` adds are iteration 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from registry.errors import NotFound

SPLIT_NAMES = ("train", "valid", "test")
_ATOM_BITS = 20  # atoms per structure below 2**20 in the (structure, atom) row key


@dataclass
class Environments:
    """Atoms of the versions ``refs`` (see the module docstring); arrays have one row per
    atom, ``member`` and ``iteration`` one column per version (``-1``: not a member)."""

    refs: list[str]
    version_ids: list[int]
    hashes: list[str]
    structure_id: np.ndarray  # (M,) int64
    atom: np.ndarray  # (M,) int32, index in the stored (canonical) atom order
    z: np.ndarray  # (M,) int16
    row: np.ndarray  # (M,) int64, training-data row in the first version holding it
    member: np.ndarray  # (M, R) bool
    iteration: np.ndarray  # (M, R) int32, -1 where not a member
    split: np.ndarray  # (M,) int8, split in the first version holding it
    energy: np.ndarray  # (M,) float64, (E − Σ reference energies) / n_atoms, eV/atom

    def __len__(self) -> int:
        return len(self.structure_id)

    @property
    def first(self) -> np.ndarray:
        """(M,) index of the first version (in the order given) that holds each row."""
        return np.argmax(self.member, axis=1).astype(np.int16)

    def elements(self) -> list[int]:
        return sorted(int(z) for z in np.unique(self.z))


def atom_keys(structure_id: np.ndarray, atom: np.ndarray) -> np.ndarray:
    """One sortable integer per (structure, atom): rows of :class:`Environments` are in
    this key's order."""
    return (np.asarray(structure_id, np.int64) << _ATOM_BITS) | np.asarray(atom, np.int64)


def version_atoms(reg, info: dict) -> dict:
    """Per-atom arrays of one version (``info``: :func:`registry.Registry.resolve_dataset`)."""
    from pipelines.training.data import training_data

    mat = reg.materialize(info["ref"])
    data = training_data(mat)
    sid_of_row = np.concatenate([b["structure_id"] for b in mat.buckets]) if mat.buckets \
        else np.zeros(0, np.int64)
    energy = data.column("energy") / np.maximum(data.n_atoms, 1) if data.n_structures \
        else np.zeros(0)
    rows, atoms, zs = [], [], []
    for g in data.groups:
        r, a = np.nonzero(g.numbers > 0)
        rows.append(g.index[r])
        atoms.append(a)
        zs.append(g.numbers[r, a])
    row = _cat(rows, np.int64)
    return {"row": row, "atom": _cat(atoms, np.int32), "z": _cat(zs, np.int16),
            "structure_id": sid_of_row[row].astype(np.int64), "split": data.split[row],
            "energy": energy[row], "hash": mat.hash}


def _cat(parts: list, dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def structure_iterations(reg, info: dict, structure_ids: np.ndarray) -> np.ndarray:
    """(len(structure_ids),) iteration of each structure of version ``info`` (module doc)."""
    from registry.active_learning.iterations import labelled_in_iterations
    from registry.query import Q

    labelled = labelled_in_iterations(reg, int(info["id"]))
    if labelled is not None:
        return np.asarray([labelled[i] + 1 if i in labelled else 0
                           for i in structure_ids.tolist()], dtype=np.int32)

    out = np.full(len(structure_ids), int(info["version"]), dtype=np.int32)
    for k in range(int(info["version"]) - 1, 0, -1):  # last write wins: the first version
        try:
            ids = reg.query_ids(Q._nnp_dataset == f"{info['name']}:{k}")
        except NotFound:  # a version number that does not exist
            continue
        out[np.isin(structure_ids, np.asarray(ids, dtype=np.int64))] = k
    return out


def read_environments(reg, infos: list[dict]) -> Environments:
    """The environments of the versions ``infos`` (resolved, in the order given)."""
    parts = []
    for k, info in enumerate(infos):
        a = version_atoms(reg, info)
        if a["hash"] != info["hash"]:
            raise RuntimeError(f"{info['ref']} read with hash {a['hash']}, expected "
                               f"{info['hash']}")
        uniq, inv = np.unique(a["structure_id"], return_inverse=True)
        a["iteration"] = structure_iterations(reg, info, uniq)[inv]
        a["version"] = np.full(len(a["row"]), k, dtype=np.int16)
        parts.append(a)
    cat = {f: np.concatenate([p[f] for p in parts]) for f in
           ("structure_id", "atom", "z", "row", "split", "energy", "iteration", "version")}
    key = atom_keys(cat["structure_id"], cat["atom"])
    # np.unique keeps the first occurrence: versions were concatenated in the order given
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    n, r = len(first), len(infos)
    member = np.zeros((n, r), dtype=bool)
    member[inverse, cat["version"]] = True
    iteration = np.full((n, r), -1, dtype=np.int32)
    iteration[inverse, cat["version"]] = cat["iteration"]
    return Environments(
        [i["ref"] for i in infos], [int(i["id"]) for i in infos], [i["hash"] for i in infos],
        structure_id=cat["structure_id"][first], atom=cat["atom"][first],
        z=cat["z"][first], row=cat["row"][first], member=member, iteration=iteration,
        split=cat["split"][first].astype(np.int8), energy=cat["energy"][first])


def first_iteration(env: Environments) -> np.ndarray:
    """(M,) iteration of each row in the first version holding it."""
    return env.iteration[np.arange(len(env)), env.first]
