"""The COPY packer's column handling against a plain per-value reference (no database)."""

import numpy as np
import pytest

from registry.store.pgcopy import _column, pack


def _reference(values):
    enc = [None if v is None else v.encode() if isinstance(v, str) else v for v in values]
    return enc, [-1 if v is None else len(v) for v in enc]


@pytest.mark.parametrize("values", [
    ["CH4", "C2H6O", "H2O"],  # ASCII of varying length
    ["a" * 64, "b" * 64],  # ASCII of one length: stays str (fixed-width field)
    ["Å-source", "ß", "plain"],  # UTF-8: byte lengths, not characters
    ["x", None, "yz"],  # NULL among strings
    ["a\0b", "c"],  # the separator inside a value
    [None, None],  # all NULL
    ["", "", ""],  # empty strings (zero-length values, not NULL)
    [b"\x00\x01", b"", b"\xff" * 5],  # bytes
    [b"ab", None],
])
def test_column_matches_reference(values):
    got, lens = _column(list(values))
    enc, ref_lens = _reference(values)
    if all(v is None for v in values):
        assert lens is None
        return
    assert lens.tolist() == ref_lens
    as_bytes = [None if v is None else v.encode() if isinstance(v, str) else v for v in got]
    assert as_bytes == enc


def test_pack_pieces_join_to_one_stream(monkeypatch):
    """The stream is the same whatever the piece size."""
    import registry.store.pgcopy as pc

    rows = 7
    var = [("f", [f"F{k}" * (k % 3 + 1) for k in range(rows)]),
           ("b", [bytes(range(k)) for k in range(rows)], np.arange(rows))]
    fixed = [("id", ">i8", np.arange(rows))]
    whole = b"".join(pack(rows, fixed, var)[1])
    monkeypatch.setattr(pc, "_PIECE_ROWS", 2)
    names, pieces = pack(rows, fixed, var)
    pieces = list(pieces)
    assert names == ["id", "f", "b"] and len(pieces) == 2 + 4
    assert b"".join(pieces) == whole
