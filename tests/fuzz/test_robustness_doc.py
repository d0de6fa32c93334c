"""The table of bad inputs in docs/robustness.md, run row by row on both backends: each
example exits 2, prints its message (the table's text, ``…`` marking parts left out) and
changes no row. A row whose message drifts from the code fails here, so the table stays
current."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from .support import backend_registry, make_workspace, table_counts

DOC = Path(__file__).resolve().parents[2] / "docs" / "robustness.md"
# Examples the table abbreviates: the argv each stands for.
EXPANDED = {
    "nnp ingest new.xyz --level xxx…": ["ingest", "new.xyz", "--level", "x" * 300],
    "nnp models register m2 w.safetensors --architecture aaa…": [
        "models", "register", "m2", "w.safetensors", "--architecture", "a" * 200],
    "nnp query 'nsites > 999…'": ["query", "nsites > " + "9" * 5000],
    "nnp query '((…(nsites = 1)…))'": ["query", "(" * 65 + "nsites = 1" + ")" * 65],
    "nnp query 'nsites = 0 OR nsites = 1 OR …'": [
        "query", " OR ".join(f"nsites = {k}" for k in range(1001))],
}
CODE = re.compile(r"(`+)\s?(.+?)\s?\1")


def table_rows() -> list[tuple[str, str, str]]:
    """(kind, example, message) of each row of the bad-inputs table."""
    text = DOC.read_text()
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| kind"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        example = CODE.search(cells[1]).group(2)
        message = CODE.search(cells[2]).group(2).replace("\\|", "|")
        rows.append((cells[0], example, message))
    return rows


ROWS = table_rows()


def argv_of(example: str) -> tuple[dict[str, str], list[str]]:
    """(environment, argv after ``nnp``) of an example command."""
    if example in EXPANDED:
        return {}, EXPANDED[example]
    words = shlex.split(example)
    env = {}
    while words[0] != "nnp":
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words[1:]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def workspace(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("doc")
    with backend_registry(request.param, tmp_path_factory) as reg, \
            pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNP_ARTIFACTS", str(work / "artifacts"))
        make_workspace(reg, work)
        yield reg, work


def test_the_table_has_rows():
    assert len(ROWS) >= 40 and all(m.startswith(("error:", "Usage:")) for _, _, m in ROWS)


@pytest.mark.parametrize("kind, example, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_row(workspace, nnp, capsys, monkeypatch, kind, example, message):
    if "/proc/" in example and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    reg, work = workspace
    monkeypatch.chdir(work)
    monkeypatch.setenv("NNP_DATABASE_URL", reg.url)
    monkeypatch.setenv("NNP_ARTIFACTS", str(work / "artifacts"))
    monkeypatch.setenv("NNP_CACHE", str(work / "cache"))
    env, argv = argv_of(example)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = table_counts(reg)
    capsys.readouterr()
    code = nnp(*argv)
    out = capsys.readouterr()
    printed = " ".join((out.err + out.out).split())
    assert code == 2, (code, printed)
    assert "Traceback" not in printed, printed
    at = 0
    for part in (p.strip() for p in message.split("…")):
        found = printed.find(part, at)
        assert found >= 0, (part, printed)
        at = found + len(part)
    assert printed.startswith(message.split("…")[0].strip()), printed
    assert table_counts(reg) == before
