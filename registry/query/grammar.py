"""The OPTIMADE filter grammar as a LALR(1) parser whose tables are built once and kept on disk.

The grammar is the ``optimade`` package's own (v1.2.0). Lark builds its LALR tables in ~50 ms,
more than a cold ``nnp query --count`` spends on the query itself, so the tables are written
to the user's cache folder (:func:`registry.config.user_cache_dir`) on first use and loaded in
a few milliseconds afterwards. The file's name holds a hash of the grammar, the Lark version
and the Python version, so an upgrade of any of them builds (and writes) a fresh file. A file
that is missing, unreadable or damaged only costs the rebuild; a cache folder that cannot be
written only costs the rebuild every time.

The tables are stored with :mod:`marshal` (dicts, lists, strings and numbers; unlike pickle,
loading runs no code), in a folder only the user can write, like Python's own ``__pycache__``.
LALR(1) reads the same language as the Earley parser optimade uses
(tests/test_query_grammar.py compares the two on filters drawn from the grammar), and its time
grows linearly with the filter.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from lark import Lark
from lark import __version__ as lark_version
from lark.grammar import Rule
from lark.lexer import TerminalDef

from .. import config

GRAMMAR_VERSION = (1, 2, 0)
CACHE_FORMAT = 1  # bump when what is stored changes
OPTIONS = {"parser": "lalr", "maybe_placeholders": False}


def grammar_text() -> str:
    """The OPTIMADE filter grammar (Lark syntax) of :data:`GRAMMAR_VERSION`."""
    from optimade.filterparser.lark_parser import AVAILABLE_PARSERS

    return AVAILABLE_PARSERS[GRAMMAR_VERSION]["default"].read_text(encoding="utf-8")


def cache_path(grammar: str) -> Path:
    """Where the tables of ``grammar`` are kept for this Lark and Python."""
    key = hashlib.sha256("\0".join(
        [grammar, lark_version, sys.version, str(marshal.version), str(CACHE_FORMAT),
         repr(sorted(OPTIONS.items()))]).encode()).hexdigest()
    name = "optimade-filter-v{}.{}.{}".format(*GRAMMAR_VERSION)
    return config.user_cache_dir() / f"{name}-lalr-{key[:20]}.marshal"


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR(1) parser of the OPTIMADE filter grammar (tables from the cache if there)."""
    grammar = grammar_text()
    path = cache_path(grammar)
    loaded = _load(path)
    if loaded is not None:
        return loaded
    lark = Lark(grammar, **OPTIONS)
    _save(lark, path)
    return lark


def _load(path: Path) -> Lark | None:
    try:
        with open(path, "rb") as f:
            stored = marshal.load(f)
        return Lark._load_from_dict(stored["data"], stored["memo"])
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001  (a damaged cache file is rebuilt, never an error)
        return None


def _save(lark: Lark, path: Path) -> None:
    """Write the tables atomically (a temporary file renamed over the name), so concurrent
    processes never read a half-written file; a folder that cannot be written is skipped."""
    data, memo = lark.memo_serialize([TerminalDef, Rule])
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                marshal.dump({"data": data, "memo": memo}, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, ValueError):  # read-only home, no space, unmarshallable: parse anyway
        pass
