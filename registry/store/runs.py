"""Provenance runs: the one way every writing operation records itself.

``with run(reg, kind, params) as r:`` opens a ``running`` row, lets the body record what it
consumed and produced (``r.consumed(...)``, ``r.produced(...)``, ``r.result``), and closes the
row as ``ok``, ``failed`` (any exception, with its message) or ``interrupted`` (Ctrl-C), with
the lineage edges. Given ``session=``, the run is written inside that transaction instead, so
it commits, or vanishes, together with the change it describes.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select

from ..errors import BadInput, NotFound
from .provenance import code_version, current_user, environment
from .refs import INT64_MAX, check_int, check_text, fits_id
from .schema import Run, RunEntity, utcnow

STATES = ("running", "ok", "failed", "interrupted")


def edge(entity_type, entity_id=None, ref=None, sha256=None, **meta) -> dict:
    """A lineage edge: an entity a run consumed or produced."""
    return dict(entity_type=entity_type, entity_id=entity_id, ref=ref, sha256=sha256,
                meta=meta or None)


@dataclass
class RunHandle:
    """A run in progress; ``inputs``/``outputs`` are recorded when it finishes."""

    id: int
    kind: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)

    def consumed(self, entity_type, entity_id=None, ref=None, sha256=None, **meta):
        self.inputs.append(edge(entity_type, entity_id, ref, sha256, **meta))

    def produced(self, entity_type, entity_id=None, ref=None, sha256=None, **meta):
        self.outputs.append(edge(entity_type, entity_id, ref, sha256, **meta))


def _open(s, kind: str, params: dict | None) -> RunHandle:
    code = code_version()
    row = Run(kind=kind, status="running", params=params, code_version=code["version"],
              git_commit=code["git_commit"], git_dirty=code["git_dirty"],
              environment=environment(), user=current_user(), started_at=utcnow())
    s.add(row)
    s.flush()
    return RunHandle(id=row.id, kind=kind)


def _close(s, handle: RunHandle, status: str, error: str | None) -> None:
    row = s.get(Run, handle.id)
    row.status, row.error, row.ended_at = status, error, utcnow()
    row.result = handle.result or None
    for role, items in (("input", handle.inputs), ("output", handle.outputs)):
        s.add_all(RunEntity(run_id=handle.id, role=role, **e) for e in items)
    handle.inputs, handle.outputs = [], []
    s.flush()


def add_edges(s, run_id: int, inputs=(), outputs=()) -> None:
    """Attach lineage edges to the existing run ``run_id`` inside session ``s``."""
    for role, items in (("input", inputs), ("output", outputs)):
        s.add_all(RunEntity(run_id=run_id, role=role, **e) for e in items)


def start_run(reg, kind: str, params: dict | None = None) -> RunHandle:
    """Create a ``running`` run row in its own transaction and return its handle."""
    with reg.session() as s:
        return _open(s, kind, params)


def finish_run(reg, handle: RunHandle, status: str = "ok", error: str | None = None) -> None:
    """Mark the run finished, store its result and lineage edges (one transaction)."""
    if status not in STATES[1:]:
        raise ValueError(f"a run finishes as one of {STATES[1:]}, not {status!r}")
    with reg.session() as s:
        _close(s, handle, status, error)


@contextmanager
def run(reg, kind: str, params: dict | None = None, *, session=None):
    """``with run(reg, "kind", params) as r:`` — see the module docstring."""
    if session is not None:
        handle = _open(session, kind, params)
        yield handle
        _close(session, handle, "ok", None)
        return
    handle = start_run(reg, kind, params)
    try:
        yield handle
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            finish_run(reg, handle, status, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        except Exception:  # never hide the original error behind a failed bookkeeping write
            pass
        raise
    finish_run(reg, handle, "ok")


def get_run(reg, run_id: int) -> dict:
    """A run as a dict with its inputs and outputs."""
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise BadInput(f"a run id is an integer, got {run_id!r}")
    if not fits_id(run_id):  # no such row; a driver would refuse to bind it
        raise NotFound(f"no run with id {run_id} (run ids are 1 to {INT64_MAX})")
    with reg.session() as s:
        row = s.get(Run, run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id}")
        edges = s.scalars(select(RunEntity).where(RunEntity.run_id == run_id)).all()
        out = {c.name: getattr(row, c.name) for c in Run.__table__.columns}
        out["status"] = run_state(row.status, row.environment)
        for role in ("input", "output"):
            out[role + "s"] = [
                {k: getattr(e, k) for k in ("entity_type", "entity_id", "ref", "sha256",
                                            "meta")}
                for e in edges if e.role == role
            ]
        return out


def runs_consuming(reg, entity_type: str, entity_id: int) -> list[dict]:
    """Runs that recorded the entity as an input, oldest first: ``{"id", "kind", "status"}``."""
    with reg.session() as s:
        consumers = select(RunEntity.run_id).where(
            RunEntity.role == "input", RunEntity.entity_type == entity_type,
            RunEntity.entity_id == entity_id)
        rows = s.execute(select(Run.id, Run.kind, Run.status, Run.environment)
                         .where(Run.id.in_(consumers)).order_by(Run.id)).all()
    return [{"id": i, "kind": k, "status": run_state(st, env)} for i, k, st, env in rows]


def find_outputs(reg, entity_type: str, *, ref: str | None = None,
                 entity_id: int | None = None, run_kind: str | None = None,
                 limit: int = 100) -> list[dict]:
    """Output edges of type ``entity_type`` recorded by ``ok`` runs (of ``run_kind``), newest
    run first, optionally only those with this ``ref`` / ``entity_id``: each
    ``{"run_id", "entity_type", "entity_id", "ref", "sha256", "meta"}``. Analyses find their
    stored results (artifacts named by a key in ``ref``) this way."""
    limit = check_int(limit, "limit")
    q = (select(RunEntity.run_id, RunEntity.entity_type, RunEntity.entity_id, RunEntity.ref,
                RunEntity.sha256, RunEntity.meta)
         .join(Run, Run.id == RunEntity.run_id)
         .where(RunEntity.role == "output", RunEntity.entity_type == entity_type,
                Run.status == "ok")
         .order_by(RunEntity.run_id.desc(), RunEntity.id).limit(limit))
    if ref is not None:
        q = q.where(RunEntity.ref == ref)
    if entity_id is not None:
        q = q.where(RunEntity.entity_id == entity_id)
    if run_kind is not None:
        q = q.where(Run.kind == run_kind)
    with reg.session() as s:
        return [{"run_id": r[0], "entity_type": r[1], "entity_id": r[2], "ref": r[3],
                 "sha256": r[4], "meta": r[5]} for r in s.execute(q)]


def list_runs(reg, *, kind: str | None = None, status: str | None = None,
              limit: int = 50) -> list[dict]:
    """Newest runs first. A ``running`` run whose process is gone from this host is shown
    as ``interrupted`` (killed before it could finish; its committed batches stay)."""
    limit = check_int(limit, "limit")
    check_text(kind, "run kind")
    if status is not None and status not in STATES:
        raise BadInput(f"unknown run status {status!r}: expected one of {', '.join(STATES)}")
    q = select(Run).order_by(Run.id.desc()).limit(limit)
    if kind:
        q = q.where(Run.kind == kind)
    if status == "interrupted":
        q = q.where(Run.status.in_(["running", "interrupted"]))
    elif status:
        q = q.where(Run.status == status)
    with reg.session() as s:
        rows = [{"id": r.id, "kind": r.kind, "status": run_state(r.status, r.environment),
                 "user": r.user, "started_at": r.started_at, "ended_at": r.ended_at,
                 "code_version": r.code_version, "git_commit": r.git_commit,
                 "error": r.error} for r in s.scalars(q)]
    if status:
        rows = [r for r in rows if r["status"] == status]
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
