"""Training: checkpoints and --resume, transfer learning (--from/--freeze), Δ-learning at
inference, and Δ + transfer. Small EMT data from tests/test_training.py; an in-process Dask
cluster (threads: each task still opens its own registry connection)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import counts
import test_training as tt
from test_training import LEVEL, SMALL, emt_frames, make_dataset, n_models

client, cache = tt.client, tt.cache  # the same fixtures (module-scoped cluster per module)

FAST = {**SMALL, "checkpoint_every": 2}


def train(reg, client, dataset="mols", **kw):
    from pipelines.training.ensemble import train as run

    args = {"ensemble": 2, "epochs": 6, "patience": 10, "config": dict(FAST),
            "device": "cpu", **kw}
    return run(reg, dataset, client=client, **args)


def blobs(reg, ref):
    p = reg.pull_model(ref)
    return [p.blobs[f] for f in p.weight_files()]


def state_dicts(reg, ref):
    from pipelines.training.torch_io import load_state_dicts

    return load_state_dicts(reg.pull_model(ref))


# ---------------------------------------------------------------------------- resume
def test_resume_after_a_kill_gives_the_uninterrupted_weights(registry, client, cache,
                                                             monkeypatch):
    from pipelines.training import loop
    from pipelines.training.ensemble import latest_checkpoints, resume
    from registry.errors import BadInput

    make_dataset(registry)
    straight = train(registry, client, name="m", seed=7)
    run = registry.get_run(straight["run_id"])
    ck = [e for e in run["outputs"] if e["entity_type"] == "checkpoint"]
    # every 2 epochs (2, 4, 6; 6 is also the last) for each member
    assert sorted((e["meta"]["member"], e["meta"]["epoch"]) for e in ck) == \
        [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6)]
    assert all(e["meta"]["done"] == (e["meta"]["epoch"] == 6) for e in ck)

    def kill(seed, epoch):
        if epoch == 3:
            raise RuntimeError("simulated kill")

    monkeypatch.setattr(loop, "_epoch_hook", kill)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(registry, client, name="m", seed=7)
    monkeypatch.setattr(loop, "_epoch_hook", None)
    killed = registry.list_runs(kind="train")[0]
    assert killed["status"] == "failed" and n_models(registry) == 1
    latest = latest_checkpoints(registry.get_run(killed["id"]))
    assert {k: c["epoch"] for k, c in latest.items()} == {0: 2, 1: 2}
    out = resume(registry, killed["id"], client=client)
    assert out["model"] == "m:2" and out["resumed_from"] == killed["id"]
    assert [m["resumed_at"] for m in out["members"]] == [2, 2]
    assert blobs(registry, "m:2") == blobs(registry, "m:1")  # byte-identical
    new = registry.get_run(out["run_id"])
    assert new["params"]["resumed_from"] == killed["id"] and new["status"] == "ok"
    assert any(e["entity_type"] == "run" and e["entity_id"] == killed["id"]
               for e in new["inputs"])
    assert registry.get_run(killed["id"])["status"] == "failed"  # the old run stays as it was
    before = (counts(registry), n_models(registry))
    with pytest.raises(BadInput, match=f"run {out['run_id']} already finished"):
        resume(registry, out["run_id"], client=client)
    ingest_run = registry.list_runs(kind="ingest")[0]["id"]
    with pytest.raises(BadInput, match="continues 'train' runs"):
        resume(registry, ingest_run, client=client)
    assert (counts(registry), n_models(registry)) == before


def test_checkpoint_round_trip_is_exact():
    import torch

    from pipelines.training.ani import check_config, new_member
    from pipelines.training.loop import read_checkpoint, write_checkpoint

    cfg = check_config({"hidden": [4]})
    cfg["elements"] = ["H", "O"]
    m = new_member(cfg, 0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step(1.0)
    rng = np.random.default_rng(3)
    rng.random(5)
    data = write_checkpoint(m, opt, sched, rng, m.state_dict(),
                            {"epoch": 4, "done": False, "best": 0.5, "best_epoch": 3,
                             "waited": 1, "curve": [{"epoch": 1}]})
    back = read_checkpoint(data)
    assert back["state"]["epoch"] == 4 and back["state"]["rng"] == rng.bit_generator.state
    for k, v in m.state_dict().items():
        assert torch.equal(back["model"][k], v) and torch.equal(back["best"][k], v)
    opt2 = torch.optim.AdamW(m.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    for p in m.parameters():
        a, b = opt.state[p], opt2.state[p]
        assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a), (a, b)
    assert b"pickle" not in data[:64]
