"""Provenance runs: start, finish, record consumed and produced entities."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select

from .provenance import code_version, current_user, environment
from .schema import Run, RunEntity, utcnow


@dataclass
class RunHandle:
    """A run in progress; ``inputs``/``outputs`` are recorded when it finishes."""

    id: int
    kind: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)

    def consumed(self, entity_type, entity_id=None, ref=None, sha256=None, **meta):
        self.inputs.append(dict(entity_type=entity_type, entity_id=entity_id, ref=ref,
                                sha256=sha256, meta=meta or None))

    def produced(self, entity_type, entity_id=None, ref=None, sha256=None, **meta):
        self.outputs.append(dict(entity_type=entity_type, entity_id=entity_id, ref=ref,
                                 sha256=sha256, meta=meta or None))


class RunsMixin:
    def start_run(self, kind: str, params: dict | None = None) -> RunHandle:
        """Create a ``running`` run row in its own transaction and return its handle."""
        code = code_version()
        with self.session() as s:
            run = Run(kind=kind, status="running", params=params, code_version=code["version"],
                      git_commit=code["git_commit"], git_dirty=code["git_dirty"],
                      environment=environment(), user=current_user(), started_at=utcnow())
            s.add(run)
            s.flush()
            return RunHandle(id=run.id, kind=kind)

    def finish_run(self, handle: RunHandle, status: str = "ok", error: str | None = None) -> None:
        """Mark the run finished, store its result and lineage edges (one transaction)."""
        with self.session() as s:
            run = s.get(Run, handle.id)
            run.status, run.error, run.ended_at = status, error, utcnow()
            run.result = handle.result or None
            for role, items in (("input", handle.inputs), ("output", handle.outputs)):
                s.add_all(RunEntity(run_id=handle.id, role=role, **e) for e in items)

    @contextmanager
    def run(self, kind: str, params: dict | None = None):
        """``with registry.run("kind", params) as run:`` — failed with the error on exception."""
        handle = self.start_run(kind, params)
        try:
            yield handle
        except BaseException as exc:
            self.finish_run(handle, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        self.finish_run(handle, "ok")

    def get_run(self, run_id: int) -> dict:
        """A run as a dict with its inputs and outputs."""
        from ..errors import NotFound

        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id}")
            edges = s.scalars(select(RunEntity).where(RunEntity.run_id == run_id)).all()
            out = {c.name: getattr(run, c.name) for c in Run.__table__.columns}
            out["status"] = run_state(run.status, run.environment)
            for role in ("input", "output"):
                out[role + "s"] = [
                    {k: getattr(e, k) for k in ("entity_type", "entity_id", "ref", "sha256",
                                                "meta")}
                    for e in edges if e.role == role
                ]
            return out

    def list_runs(self, *, kind: str | None = None, status: str | None = None,
                  limit: int = 50) -> list[dict]:
        """Newest runs first. A ``running`` run whose process is gone from this host is shown
        as ``interrupted`` (killed before it could finish; its committed batches stay)."""
        q = select(Run).order_by(Run.id.desc()).limit(max(1, int(limit)))
        if kind:
            q = q.where(Run.kind == kind)
        if status and status != "interrupted":
            q = q.where(Run.status == status)
        elif status == "interrupted":
            q = q.where(Run.status == "running")
        with self.session() as s:
            rows = [{"id": r.id, "kind": r.kind, "status": run_state(r.status, r.environment),
                     "user": r.user, "started_at": r.started_at, "ended_at": r.ended_at,
                     "code_version": r.code_version, "git_commit": r.git_commit,
                     "error": r.error} for r in s.scalars(q)]
        if status == "interrupted":
            rows = [r for r in rows if r["status"] == "interrupted"]
        return rows


def run_state(status: str, env: dict | None) -> str:
    """``interrupted`` for a ``running`` run whose process no longer exists on this host."""
    if status != "running" or not env or env.get("hostname") != socket.gethostname():
        return status
    pid = env.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:
        return status
    return status
