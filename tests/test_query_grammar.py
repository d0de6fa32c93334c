"""The filter parser: a LALR(1) parser of optimade's grammar whose tables are cached on disk.

It reads the same language as optimade's own (Earley) parser, on filters drawn from the
grammar by the fuzz strategies; its cache file is written once, loaded afterwards, rebuilt
when damaged, and a cache folder that cannot be written costs only the rebuild.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.strategies import filters
from hypothesis import HealthCheck, given, settings
from lark import Lark
from lark.exceptions import UnexpectedInput

from registry.errors import BadInput
from registry.query import grammar, parse

EARLEY = Lark(grammar.grammar_text(), maybe_placeholders=False)  # optimade's own settings


def outcome(parser: Lark, text: str):
    try:
        return parser.parse(text)
    except UnexpectedInput as exc:
        return ("error", exc.line if exc.line and exc.line > 0 else None)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=filters())
def test_lalr_reads_the_language_of_optimades_earley_parser(text):
    if len(text) > 4000:  # Earley's time grows fast with the size; LALR's does not
        return
    lalr, earley = outcome(grammar.parser(), text), outcome(EARLEY, text)
    if isinstance(earley, tuple):
        assert isinstance(lalr, tuple), text  # both refuse it
    else:
        assert lalr == earley, text  # the same tree


def test_syntax_errors_name_the_place():
    for text, says in [("nsites = = 1", "line 1, column 10: unexpected '='"),
                       ("nsites = 3 AND", "line 1, column 15: unexpected end of filter"),
                       ("nsites = 1\n AND \n", "line 2, column 6: unexpected end of filter"),
                       ("nsites = 1 §", "line 1, column 12: unexpected character '§'")]:
        with pytest.raises(BadInput, match=says):
            parse(text)


def parse_in_new_process(cache_home: Path) -> str:
    code = ("from registry.query import grammar, parse; print(parse('nsites <= 3')); "
            "print(grammar.cache_path(grammar.grammar_text()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "XDG_CACHE_HOME": str(cache_home)}, check=True)
    printed, path = out.stdout.strip().splitlines()
    assert printed == "nsites <= 3"
    return path


def test_tables_are_cached_once_and_rebuilt_when_damaged(tmp_path):
    path = Path(parse_in_new_process(tmp_path))
    assert path.parent == tmp_path / "nnp-registry" and path.is_file()
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    written = path.stat().st_mtime_ns
    parse_in_new_process(tmp_path)  # loaded, not written again
    assert path.stat().st_mtime_ns == written
    path.write_bytes(b"\x00not marshal")  # damaged: rebuilt and replaced
    parse_in_new_process(tmp_path)
    assert path.read_bytes() != b"\x00not marshal"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_an_unwritable_cache_folder_only_costs_the_rebuild(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    (home / "nnp-registry").write_text("a file where the folder would be")
    parse_in_new_process(home)
