"""A campaign's row: create, look up, claim for a process, close.

``state`` as stored is running / stopped / finished / failed. A process works on a campaign
inside one run (``run_id``); a ``running`` campaign whose run is no longer alive (the process
was killed) reads as ``stopped`` (:func:`shown_state`), and :func:`claim_campaign` lets a new
process take it over.
"""

from __future__ import annotations

from sqlalchemy import select

from ..errors import BadInput, Conflict, NotFound
from ..store.lookups import dataset_version_ref
from ..store.refs import check_name
from ..store.runs import run_state
from ..store.schema import ALCampaign, LevelOfTheory, Run, utcnow

STATES = ("running", "stopped", "finished", "failed")


def campaign_row(s, name: str, *, lock: bool = False) -> ALCampaign:
    """The campaign called ``name``; NotFound lists the known ones."""
    q = select(ALCampaign).where(ALCampaign.name == name)
    if lock:
        q = q.with_for_update()
    row = s.scalar(q)
    if row is None:
        known = s.scalars(select(ALCampaign.name).order_by(ALCampaign.name).limit(20)).all()
        raise NotFound(f"no active-learning campaign {name!r}; campaigns: "
                       f"{', '.join(known) or '(none)'}")
    return row


def shown_state(s, c: ALCampaign) -> str:
    """The stored state, or ``stopped`` for a ``running`` campaign whose run has ended or
    whose process is gone."""
    if c.state != "running" or c.run_id is None:
        return c.state
    r = s.get(Run, c.run_id)
    if r is None or run_state(r.status, r.environment) != "running":
        return "stopped"
    return "running"


def campaign_dict(s, c: ALCampaign) -> dict:
    level = s.get(LevelOfTheory, c.level_id)
    return {"id": c.id, "name": c.name, "state": shown_state(s, c), "labeler": c.labeler,
            "level": level.name, "level_id": c.level_id,
            "dataset": dataset_version_ref(s, c.dataset_version_id),
            "settings": c.settings, "seeds": list(c.seeds), "run_id": c.run_id,
            "stop_reason": c.stop_reason, "error": c.error, "created_at": c.created_at,
            "updated_at": c.updated_at}


def create_campaign(reg, name: str, *, labeler: str, level_id: int, dataset_version_id: int,
                    settings: dict, seeds: list[int]) -> dict:
    """A new campaign row (``stopped`` until a process claims it); Conflict if the name is
    taken."""
    check_name(name, "campaign name")
    if not seeds:
        raise BadInput("a campaign needs at least one seed structure")
    with reg.session() as s:
        if s.scalar(select(ALCampaign.id).where(ALCampaign.name == name)) is not None:
            raise Conflict(f"campaign {name!r} exists; continue it with `nnp al resume {name}`")
        c = ALCampaign(name=name, state="stopped", labeler=labeler, level_id=level_id,
                       dataset_version_id=dataset_version_id, settings=settings,
                       seeds=[int(i) for i in seeds], created_at=utcnow(),
                       updated_at=utcnow())
        s.add(c)
        s.flush()
        return campaign_dict(s, c)


def get_campaign(reg, name: str) -> dict:
    with reg.session() as s:
        return campaign_dict(s, campaign_row(s, name))


def campaign_exists(reg, name: str) -> bool:
    with reg.session() as s:
        return s.scalar(select(ALCampaign.id).where(ALCampaign.name == name)) is not None


def list_campaigns(reg) -> list[dict]:
    with reg.session() as s:
        return [campaign_dict(s, c)
                for c in s.scalars(select(ALCampaign).order_by(ALCampaign.name))]


def claim_campaign(reg, name: str, run_id: int) -> dict:
    """Attach the run ``run_id`` of this process to the campaign and mark it running; refused
    for a finished campaign or one another live process works on."""
    with reg.session() as s:
        c = campaign_row(s, name, lock=True)
        state = shown_state(s, c)
        if state == "finished":
            raise BadInput(f"campaign {name!r} finished ({c.stop_reason}); nothing to resume")
        if state == "running" and c.run_id != run_id:
            raise BadInput(f"campaign {name!r} is running (run {c.run_id}, its process is "
                           f"alive or on another host); stop it before resuming")
        c.state, c.run_id, c.error, c.updated_at = "running", run_id, None, utcnow()
        return campaign_dict(s, c)


def check_resumable(reg, name: str) -> dict:
    """The campaign, if a new process may take it over (see :func:`claim_campaign`);
    writes nothing."""
    with reg.session() as s:
        c = campaign_row(s, name)
        state = shown_state(s, c)
        if state == "finished":
            raise BadInput(f"campaign {name!r} finished ({c.stop_reason}); nothing to resume")
        if state == "running":
            raise BadInput(f"campaign {name!r} is running (run {c.run_id}, its process is "
                           f"alive or on another host); stop it before resuming")
        return campaign_dict(s, c)


def close_campaign(reg, campaign_id: int, state: str, *, stop_reason: str | None = None,
                   error: str | None = None) -> None:
    """Record how this process left the campaign: finished (with why), stopped, failed."""
    if state not in STATES[1:]:
        raise ValueError(f"a campaign is closed as one of {STATES[1:]}, not {state!r}")
    with reg.session() as s:
        c = s.get(ALCampaign, campaign_id)
        c.state, c.updated_at = state, utcnow()
        if stop_reason is not None:
            c.stop_reason = stop_reason
        c.error = error


def structure_ids_by_hash(reg, hashes) -> dict[str, int]:
    """{hash: structure id} of the stored structures among ``hashes``."""
    from ..store.schema import Structure

    wanted = sorted(set(hashes))
    out: dict[str, int] = {}
    with reg.session() as s:
        for i in range(0, len(wanted), 500):
            out.update(s.execute(select(Structure.hash, Structure.id)
                                 .where(Structure.hash.in_(wanted[i: i + 500]))).all())
    missing = [h for h in wanted if h not in out]
    if missing:
        raise NotFound(f"{len(missing)} structure(s) not stored, e.g. hash {missing[0][:16]}")
    return out
