"""An exact extxyz writer: floats as ``repr`` (shortest text that parses back to the same
double), so ASE's reader returns bit-identical positions, cells and labels.

ASE's own writer formats with ``%16.8f``, which loses precision.
"""

from __future__ import annotations

import numpy as np


def _num(x) -> str:
    return repr(float(x))


def _value(v) -> str:
    if isinstance(v, np.ndarray) or isinstance(v, list | tuple):
        return '"' + " ".join(_num(x) for x in np.asarray(v, dtype=float).reshape(-1)) + '"'
    if isinstance(v, bool | np.bool_):
        return "T" if v else "F"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return _num(v)


def format_frame(symbols: list[str], positions: np.ndarray, cell: np.ndarray | None,
                 pbc: np.ndarray, info: dict, arrays: dict[str, np.ndarray]) -> str:
    """One extxyz frame. ``info``: per-frame key -> number/array; ``arrays``: per-atom (N,)
    or (N, k) float arrays written as ``name:R:k`` columns."""
    n = len(symbols)
    props = ["species:S:1", "pos:R:3"]
    columns = [positions.reshape(n, 3)]
    for name, arr in arrays.items():
        arr = np.asarray(arr, dtype=float).reshape(n, -1)
        props.append(f"{name}:R:{arr.shape[1]}")
        columns.append(arr)
    head = []
    if cell is not None:
        head.append(f"Lattice={_value(np.asarray(cell).reshape(-1))}")
    head.append("Properties=" + ":".join(props))
    head += [f"{k}={_value(v)}" for k, v in info.items()]
    head.append('pbc="' + " ".join("T" if p else "F" for p in pbc) + '"')
    table = np.concatenate(columns, axis=1).tolist()
    lines = [str(n), " ".join(head)]
    lines += [s + " " + " ".join(map(repr, row)) for s, row in zip(symbols, table, strict=True)]
    return "\n".join(lines) + "\n"
