"""QM9 from the ``qm9pack`` package (its CSV files ship the 133,885 molecules), as arrays.

Used by the benchmarks that want real molecules (dedup, learning curves). ``qm9pack`` is in
the ``bench`` extra; nothing is downloaded. Energies: U0 (internal energy at 0 K), Hartree in
the files, eV here.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from importlib.util import find_spec

import numpy as np

HARTREE_EV = 27.211386245988
_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def data_dir() -> str:
    spec = find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("QM9 benchmarks need the qm9pack package: pip install -e '.[bench]'")
    return os.path.join(spec.submodule_search_locations[0], "data")


def _floats(text: str) -> np.ndarray:
    """The numbers of a nested list as the files write them ("0.", "1.2*^-6")."""
    body = text.replace("[", " ").replace("]", " ").replace(",", " ").replace("*^", "e")
    return np.array(body.split(), dtype=np.float64)


def molecules(limit: int | None = None) -> Iterator[dict]:
    """``{"name", "numbers", "positions" (Å), "u0_ev", "smiles"}`` per molecule, in file order."""
    csv.field_size_limit(1 << 26)
    n = 0
    for part in ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"):
        with open(os.path.join(data_dir(), part), newline="") as f:
            for row in csv.DictReader(f):
                symbols = row["Elements"].strip("[]").replace("'", "").split(",")
                yield {"name": row["XYZ_file"].removesuffix(".xyz"),
                       "numbers": np.array([_Z[s] for s in symbols], dtype=np.int64),
                       "positions": _floats(row["XYZ_Ang"]).reshape(-1, 3),
                       "u0_ev": float(row["InternalEnergy_0K_au"]) * HARTREE_EV,
                       "smiles": row["SMILES"]}
                n += 1
                if limit is not None and n >= limit:
                    return


def atoms(limit: int | None = None):
    """The molecules as ``ase.Atoms`` with ``info["energy"]`` = U0 (eV)."""
    from ase import Atoms

    for m in molecules(limit):
        a = Atoms(numbers=m["numbers"], positions=m["positions"])
        a.info["energy"] = m["u0_ev"]
        a.info["name"] = m["name"]
        yield a
