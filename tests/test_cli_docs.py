"""docs/cli.md is generated from the CLI and must match it (no database needed)."""

from __future__ import annotations

from pathlib import Path

import typer.main

from pipelines.cli.docgen import render_cli_markdown

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
REGENERATE = "run `python -m pipelines.cli.docgen > docs/cli.md` and commit the result"


def test_cli_reference_is_current():
    assert CLI_MD.is_file(), f"docs/cli.md is missing: {REGENERATE}"
    assert CLI_MD.read_text(encoding="utf-8") == render_cli_markdown(), (
        f"docs/cli.md differs from the CLI's --help texts: {REGENERATE}")


def _all_commands(cmd, path="nnp"):
    """Every command and group of the app, walked here independently of the generator."""
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _all_commands(sub, f"{path} {name}")


def test_every_command_is_documented():
    from pipelines.cli import app

    text = CLI_MD.read_text(encoding="utf-8")
    paths = list(_all_commands(typer.main.get_command(app)))
    assert {"nnp ingest", "nnp models pull", "nnp db upgrade"} <= set(paths)
    missing = [p for p in paths if f"\n## {p}\n" not in text]
    assert not missing, f"not in docs/cli.md: {missing}; {REGENERATE}"


def test_rendering_ignores_the_terminal(monkeypatch):
    first = render_cli_markdown()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("TERMINAL_WIDTH", "40")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert render_cli_markdown() == first
