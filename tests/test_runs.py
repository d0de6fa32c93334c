"""Provenance runs: recorded on success and failure, listed, killed runs shown as interrupted."""

import subprocess
import sys

import pytest
from helpers import labelled_molecules
from sqlalchemy import update

from registry.store.schema import Run


def test_run_context_records_ok_and_failed(registry):
    with registry.run("analysis", {"x": 1}) as run:
        run.consumed("level", None, ref="emt")
        run.result = {"answer": 42}
    ok = registry.get_run(run.id)
    assert ok["status"] == "ok" and ok["result"] == {"answer": 42}
    assert ok["inputs"][0]["ref"] == "emt" and ok["ended_at"] is not None
    assert ok["code_version"] and ok["environment"]["python"]
    with pytest.raises(ZeroDivisionError), registry.run("analysis") as bad:
        1 / 0  # noqa: B018
    failed = registry.get_run(bad.id)
    assert failed["status"] == "failed" and "ZeroDivisionError" in failed["error"]


def test_list_runs_filters_and_interrupted(registry, nnp, capsys):
    summary = registry.ingest(labelled_molecules(), "pbe")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    handle = registry.start_run("ingest", {"note": "killed"})
    with registry.session() as s:
        env = s.get(Run, handle.id).environment
        s.execute(update(Run).where(Run.id == handle.id)
                  .values(environment={**env, "pid": dead.pid}))
    runs = registry.list_runs(kind="ingest")
    assert [r["id"] for r in runs] == [handle.id, summary.run_id]
    assert runs[0]["status"] == "interrupted" and runs[1]["status"] == "ok"
    assert [r["id"] for r in registry.list_runs(status="interrupted")] == [handle.id]
    assert [r["id"] for r in registry.list_runs(status="ok", kind="ingest")] == [summary.run_id]
    assert registry.list_runs(kind="train") == []
    assert nnp("runs", "list", "--kind", "ingest") == 0
    out = capsys.readouterr().out
    assert "interrupted" in out and "ingest" in out
    assert nnp("runs", "show", summary.run_id) == 0
    assert "structures_new" in capsys.readouterr().out
    assert nnp("runs", "show", 999999) == 2
    assert "no run with id 999999" in capsys.readouterr().err
