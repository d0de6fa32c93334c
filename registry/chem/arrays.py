"""Arrays stored as packed little-endian bytes with a documented dtype and shape.

| column                 | dtype | shape      |
|------------------------|-------|------------|
| structures.numbers     | <u1   | (n,)       |
| structures.positions   | <f8   | (n, 3) Å   |
| structures.cell        | <f8   | (3, 3) Å   |
| labels.forces          | <f8   | (n, 3) eV/Å|
| labels.dipole          | <f8   | (3,) e·Å   |
| labels.charges         | <f8   | (n,) e     |
| labels.stress          | <f8   | (6,) eV/Å³ (Voigt xx yy zz yz xz xy) |
"""

from __future__ import annotations

from operator import itemgetter

import numpy as np

F8 = np.dtype("<f8")
U1 = np.dtype("<u1")


def pack(array, dtype=F8) -> bytes:
    """Pack ``array`` as contiguous little-endian bytes of ``dtype``."""
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def unpack(data: bytes | None, shape=(-1,), dtype=F8):
    """Inverse of :func:`pack`; ``None`` stays ``None``."""
    if data is None:
        return None
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def unpack_positions(data: bytes) -> np.ndarray:
    return unpack(data, (-1, 3))


def unpack_numbers(data: bytes) -> np.ndarray:
    return unpack(data, (-1,), U1).astype(np.int64)


def take(seq, idx: list[int]) -> list:
    """``[seq[i] for i in idx]`` at C speed (picks of per-row values for the writers)."""
    if len(idx) > 1:
        return list(itemgetter(*idx)(seq))
    return [seq[i] for i in idx]
