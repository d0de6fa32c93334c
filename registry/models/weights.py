"""Model weights as safetensors: validation and (de)serialisation of numpy state dicts.

The registry never unpickles anything: a weights file must be safetensors (an 8-byte
little-endian header length, a JSON header, raw tensor bytes). Pickles and ``torch.save``
zip archives are recognised and refused with a message saying how to convert them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

from ..errors import BadInput

_MAX_HEADER = 100 << 20
_CONVERT = ("convert it with pipelines.training.torch_io.state_dict_to_safetensors("
            "model.state_dict()) or safetensors.torch.save_file")


def check_safetensors(data: bytes, what: str = "weights") -> dict:
    """The parsed header of safetensors ``data``; :class:`BadInput` if it is not one."""
    data = memoryview(data)
    try:
        return _parse(data)
    except ValueError as exc:
        head = bytes(data[:4])
        if head.startswith(b"PK"):
            raise BadInput(f"{what} is a zip archive (a torch.save file?), not safetensors; "
                           f"refusing to load it: {_CONVERT}") from None
        if head[:1] == b"\x80":
            raise BadInput(f"{what} looks like a Python pickle, not safetensors; pickles are "
                           f"never loaded: {_CONVERT}") from None
        raise BadInput(f"{what} is not a safetensors file ({exc})") from None


def _parse(data: memoryview) -> dict:
    if len(data) < 10:
        raise ValueError(f"{len(data)} bytes")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"bad header length {n}")
    try:
        header = json.loads(bytes(data[8:8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    body = len(data) - 8 - n
    end_max = 0
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        try:
            start, end = spec["data_offsets"]
            ok = (isinstance(spec["dtype"], str) and isinstance(spec["shape"], list)
                  and 0 <= start <= end <= body)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"bad entry for tensor {key!r}")
        end_max = max(end_max, end)
    if end_max != body:
        raise ValueError(f"data is {body} bytes, tensors cover {end_max}")
    return header


def tensor_names(data: bytes) -> list[str]:
    return sorted(k for k in check_safetensors(data) if k != "__metadata__")


def to_safetensors(member, what: str = "weights") -> bytes:
    """Safetensors bytes from a dict of numpy arrays, safetensors bytes, or a file path."""
    if isinstance(member, bytes | bytearray | memoryview):
        data = bytes(member)
    elif isinstance(member, str | PathLike):
        path = Path(member)
        if not path.is_file():
            raise BadInput(f"{what}: no such file {str(path)!r}")
        data = path.read_bytes()
        what = f"{what} file {path.name!r}"
    elif isinstance(member, Mapping):
        return _save_numpy(member, what)
    else:
        raise BadInput(f"{what} must be a dict of numpy arrays, safetensors bytes or a path to "
                       f"a .safetensors file, not {type(member).__name__}")
    check_safetensors(data, what)
    return data


def _save_numpy(state: Mapping, what: str) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    if not state:
        raise BadInput(f"{what} is an empty state dict")
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise BadInput(f"{what}: tensor names must be strings, got {key!r}")
        if not isinstance(value, np.ndarray):
            raise BadInput(f"{what}: {key!r} is a {type(value).__name__}, not a numpy array; "
                           f"for torch state dicts {_CONVERT}")
        if value.dtype.kind not in "biuf":
            raise BadInput(f"{what}: {key!r} has unsupported dtype {value.dtype}")
        arrays[key] = np.ascontiguousarray(value)
    return save(arrays)


def load_numpy(data: bytes) -> dict:
    """A dict of numpy arrays from (already verified) safetensors bytes."""
    from safetensors.numpy import load

    return load(data)
