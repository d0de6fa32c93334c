"""Content hash of a dataset version (algorithm version 1).

sha256 over a header naming the algorithm, the levels (fidelities) and the delta pair, then
the sorted ``structure_hash label_hash split`` lines of every member. Ids never enter it, so
equal content gives an equal hash on SQLite, PostgreSQL or any other machine.
"""

from __future__ import annotations

import hashlib
import json

DATASET_HASH_VERSION = 1


def dataset_hash(triples, levels: list[str], delta: dict | None = None) -> str:
    """Hash ``(structure_hash, label_hash, split)`` triples (any order) with the fidelities."""
    header = json.dumps({"algo": "nnp-ds", "version": DATASET_HASH_VERSION,
                         "levels": list(levels), "delta": delta},
                        sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(header.encode() + b"\n")
    lines = sorted(f"{s} {lab} {int(sp)}\n" for s, lab, sp in triples)
    h.update("".join(lines).encode())
    return h.hexdigest()
