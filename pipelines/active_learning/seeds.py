"""Seed structures: read and checked from a file, stored as (unlabelled) structures, read back.

Stored in the registry, the seeds outlive the file: a resumed campaign reads them from the
database. Each seed's charge and multiplicity come from its ``info`` (as ingest reads them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from registry.errors import BadInput


def read_seeds(path) -> list:
    """Every frame of ``path`` (any format ASE reads) as ``ase.Atoms``."""
    import ase.io

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"--seeds {str(p)!r}: no such file")
    try:
        frames = ase.io.read(p, index=":")
    except Exception as exc:  # noqa: BLE001  (ASE raises many kinds for an unreadable file)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"--seeds {str(p)!r}: ASE cannot read it ({text})") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise BadInput(f"--seeds {str(p)!r} holds no structures")
    for i, a in enumerate(frames):
        if len(a) == 0:
            raise BadInput(f"--seeds {str(p)!r}: frame {i} has no atoms")
        if not np.isfinite(a.positions).all():
            raise BadInput(f"--seeds {str(p)!r}: frame {i} has non-finite positions")
        if a.pbc.any() and abs(np.linalg.det(np.asarray(a.cell))) < 1e-9:
            raise BadInput(f"--seeds {str(p)!r}: frame {i} is periodic but its cell has no "
                           f"volume")
    return frames


def check_elements(seeds: list, elements: list[str], dataset_ref: str) -> None:
    """:class:`BadInput` naming the seed elements the dataset (hence the model) lacks."""
    have = set(elements)
    lacking = sorted({s for a in seeds for s in a.get_chemical_symbols()} - have)
    if lacking:
        raise BadInput(f"the seeds have {', '.join(lacking)}, which dataset {dataset_ref} "
                       f"lacks (it has {', '.join(sorted(have))}); the committee cannot "
                       f"predict them")


def store_seeds(reg, seeds: list, source: str) -> list[int]:
    """Ingest the seeds as unlabelled structures (deduplicated) and return their structure
    ids in file order."""
    from registry.active_learning.campaigns import structure_ids_by_hash
    from registry.active_learning.candidates import frame_hashes
    from registry.io.atoms import atoms_to_batch

    batch, _ = atoms_to_batch(seeds, None, source=source)
    batch.validate()
    reg.ingest_batch(batch, params={"level": None, "source": source})
    frames = [{"numbers": batch.numbers[a:b], "positions": batch.positions[a:b],
               "cell": batch.cells[i] if batch.pbc[i].any() else None, "pbc": batch.pbc[i],
               "charge": batch.charge[i], "multiplicity": batch.multiplicity[i]}
              for i, (a, b) in enumerate(zip(batch.offsets[:-1], batch.offsets[1:],
                                             strict=True))]
    hashes = frame_hashes(frames)
    ids = structure_ids_by_hash(reg, hashes)
    return [ids[h] for h in hashes]


def load_structures(reg, structure_ids: list[int]) -> list:
    """Stored structures as ``ase.Atoms``, in the order of ``structure_ids`` (canonical atom
    order; cell, pbc, and charge and multiplicity in ``info``)."""
    from ase import Atoms

    found = {}
    for batch in reg.iter_frames([], structure_ids):
        for i, name in enumerate(batch.frame_names):
            a, b = int(batch.offsets[i]), int(batch.offsets[i + 1])
            atoms = Atoms(numbers=batch.numbers[a:b], positions=batch.positions[a:b],
                          cell=batch.cells[i], pbc=batch.pbc[i])
            atoms.info.update(charge=int(batch.charge[i]),
                              multiplicity=int(batch.multiplicity[i]))
            found[int(name.split()[-1])] = atoms
    return [found[int(i)].copy() for i in structure_ids]
