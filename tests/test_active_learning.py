"""Active learning (``nnp al``): the loop on both backends, kill and resume, bad input.

Tiny settings throughout: aluminium cells of 8 atoms labelled by ASE's EMT, committees of
2 small ANI members trained a few epochs, MD of a few dozen steps. Library tests use the
in-process Dask cluster (threads); the kill test runs a campaign in a real subprocess,
kills it with SIGKILL after some labels and resumes it here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

SMALL = {"hidden": [16, 16], "radial_shifts": 8, "angular_shifts": 4, "batch_size": 16}
STATUS_KEYS = {"name", "state", "stop_reason", "error", "labeler", "level", "dataset",
               "settings", "n_seeds", "run_id", "labels_total", "labels_failed",
               "labels_attempted", "iterations", "created_at", "updated_at"}
ITERATION_KEYS = {"iteration", "phase", "n_candidates", "n_selected", "n_labeled",
                  "n_failed", "n_pending", "threshold", "fraction_above", "rho",
                  "dataset_version", "model_version", "train_run_id", "new_dataset_version",
                  "ingest_run_id", "metrics", "trajectories", "md_stops", "n_md_stops",
                  "failed_labels", "seconds", "started_at", "finished_at", "diversity"}


def al_cell(rng, scale=0.05):
    from ase.build import bulk

    a = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 1, 1))
    a.positions += rng.normal(scale=scale, size=a.positions.shape)
    return a


def make_start(reg, tmp_path, n: int = 10) -> str:
    """EMT-labelled rattled Al cells as dataset al0:1, and a seeds file of two cells."""
    import ase.io
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        a = al_cell(rng)
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
        frames.append(a)
    reg.ingest(frames, "emt")
    reg.create_dataset_version("al0", levels=["emt"], split="0.8,0.1,0.1", group_by="none")
    seeds = tmp_path / "seeds.extxyz"
    ase.io.write(seeds, [al_cell(rng, 0.0), al_cell(rng, 0.1)], format="extxyz")
    return str(seeds)


def settings(**kw):
    from pipelines.active_learning.settings import Settings

    args = dict(ensemble=2, temperatures=[300.0, 900.0], steps=10, interval=5,
                timestep_fs=2.0, threshold=1e-4, per_iteration=3, iterations=2, epochs=4,
                patience=10, train_config=dict(SMALL))
    return Settings(**{**args, **kw})


def al_rows(reg):
    from sqlalchemy import func, select

    from registry.store.schema import ALCampaign, ALCandidate, Run, Structure

    with reg.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t))
                     for t in (ALCampaign, ALCandidate, Run, Structure))


# ------------------------------------------------------------------------------ the loop
def test_campaign_two_iterations_and_status(registry, client, cache, tmp_path, nnp, capsys,
                                            monkeypatch):
    """Two iterations: the committee is trained then warm-started, MD candidates are
    stored with ρ, the selection is spread and deduplicated, a labeler failure is a failed
    label, labels are ingested with the campaign's provenance, and each iteration's dataset
    version is the previous one plus the new labels with the old splits kept."""
    import pipelines.labeling as labeling
    from pipelines.active_learning.campaign import start
    from registry.active_learning.candidates import candidate_table

    seeds = make_start(registry, tmp_path)
    real = labeling.get_labeler
    calls = {"n": 0}
    lock = threading.Lock()

    class FirstFails:
        def __init__(self, lab):
            self.lab = lab

        def __getattr__(self, name):
            return getattr(self.lab, name)

        def label(self, atoms):
            with lock:
                calls["n"] += 1
                first = calls["n"] == 1
            if first:
                raise labeling.LabelFailure("SCF not converged in 50 cycles (test)")
            return self.lab.label(atoms)

    monkeypatch.setattr(labeling, "get_labeler", lambda spec, **kw: FirstFails(real(spec)))
    events = []
    out = start(registry, "al-t", "al0", "emt", seeds, settings(), client=client,
                on_event=events.append)
    assert set(out) == STATUS_KEYS
    assert out["state"] == "finished" and out["stop_reason"].startswith("iterations: 2 of 2")
    its = out["iterations"]
    assert [it["iteration"] for it in its] == [0, 1]
    for it in its:
        assert set(it) == ITERATION_KEYS and it["phase"] == "done"
        assert it["trajectories"] == 4 and it["n_candidates"] >= 4
        assert it["n_selected"] == 3 and it["n_labeled"] + it["n_failed"] == 3
        assert it["threshold"] == 1e-4 and it["fraction_above"] == 1.0
        assert set(it["metrics"]) == {"train", "val", "test"}
        assert it["seconds"]["train"] > 0 and "bookkeeping" in it["seconds"]
    assert [it["model_version"] for it in its] == ["al-t:1", "al-t:2"]
    assert its[0]["n_failed"] == 1 and its[1]["n_failed"] == 0
    assert "SCF not converged" in its[0]["failed_labels"][0]["message"]
    assert out["labels_total"] == 5 and out["labels_failed"] == 1
    assert (its[0]["dataset_version"], its[0]["new_dataset_version"]) == ("al0:1", "al-t:1")
    assert (its[1]["dataset_version"], its[1]["new_dataset_version"]) == ("al-t:1", "al-t:2")
    # warm start: the second committee starts from the first
    assert registry.show_model("al-t:2")["parent"] == "al-t:1"
    # the selection: 3 frames from 3 different trajectories (spread), unique structures
    from registry.active_learning.iterations import list_iterations

    rows = list_iterations(registry, registry_campaign_id(registry, "al-t"))
    for row in rows:
        t = candidate_table(registry, row["id"])
        sel = t["selected"]
        assert len(set(t["trajectory"][sel])) == 3
        assert len({h for h, s in zip(t["hash"], sel, strict=True) if s}) == 3
        assert (t["rho"][sel] > 1e-4).all()
    # datasets: old members keep their splits, new ones are added
    diff = registry.diff_datasets("al0:1", "al-t:1")
    assert (diff["added"], diff["removed"], diff["split_changed"]) == (2, 0, 0)
    diff = registry.diff_datasets("al-t:1", "al-t:2")
    assert (diff["added"], diff["removed"], diff["split_changed"]) == (3, 0, 0)
    # provenance: the labels' ingest run names the campaign and consumed the committee
    run = registry.get_run(its[0]["ingest_run_id"])
    assert run["params"]["campaign"] == "al-t" and run["params"]["iteration"] == 0
    assert any(e["entity_type"] == "model_version" and e["ref"] == "al-t:1"
               for e in run["inputs"])
    # the CLI report: JSON shape and the PNG
    png = tmp_path / "al.png"
    capsys.readouterr()
    assert nnp("al", "status", "al-t", "--json", "--png", png) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == STATUS_KEYS and doc["state"] == "finished"
    assert [set(it) for it in doc["iterations"]] == [ITERATION_KEYS] * 2
    assert png.read_bytes().startswith(b"\x89PNG")
    # diversity numbers per iteration: none until computed, then stored and shown
    assert [it["diversity"] for it in doc["iterations"]] == [[], []]
    from pipelines.active_learning.report import status

    shown = status(registry, "al-t", compute_diversity=True, client=client)
    for it in shown["iterations"]:
        (div,) = it["diversity"]
        mat = registry.materialize(it["new_dataset_version"])
        n_al = sum(int((b["numbers"] == 13).sum()) for b in mat.buckets)
        assert div["features"] == "aev" and div["elements"]["Al"]["n_environments"] == n_al
    capsys.readouterr()
    assert nnp("al", "status", "al-t") == 0
    assert "iteration 1 diversity (aev" in capsys.readouterr().out
    # a finished campaign is not resumed; nothing is written
    before = al_rows(registry)
    assert nnp("al", "resume", "al-t") == 2
    assert "finished" in capsys.readouterr().err
    assert al_rows(registry) == before


def registry_campaign_id(reg, name: str) -> int:
    from registry.active_learning.campaigns import get_campaign

    return get_campaign(reg, name)["id"]


# ------------------------------------------------------------------------ kill and resume
KILLED = """
import os, time
import pipelines.labeling as labeling
real = labeling.get_labeler

class Slow:
    def __init__(self, lab):
        self.lab = lab
    def __getattr__(self, name):
        return getattr(self.lab, name)
    def label(self, atoms):
        time.sleep(0.5)  # slow enough for the test to kill the process between labels
        return self.lab.label(atoms)

labeling.get_labeler = lambda spec, **kw: Slow(real(spec))
from dask.distributed import Client, LocalCluster
from pipelines.active_learning.campaign import resume
with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                  dashboard_address=":0") as cluster, Client(cluster) as client:
    resume(os.environ["NNP_DATABASE_URL"], "al-k", client=client)
"""


def labels_by_status(reg) -> dict:
    from sqlalchemy import select

    from registry.store.schema import ALCandidate

    with reg.session() as s:
        rows = s.execute(select(ALCandidate.id, ALCandidate.label_status,
                                ALCandidate.labeled_at)
                         .where(ALCandidate.label_status.is_not(None))).all()
    return {i: (st, at) for i, st, at in rows}


def test_killed_campaign_resumes_without_repeating_work(registry, client, cache, tmp_path,
                                                        monkeypatch):
    """Ctrl-C stops a campaign as it starts labeling; a real process resuming it is killed
    with SIGKILL after its first labels; `resume` then labels only the rest, keeps the
    committee trained before and finishes the iteration."""
    import pipelines.labeling as labeling
    from pipelines.active_learning.campaign import resume, start

    seeds = make_start(registry, tmp_path)

    def ctrl_c_at_labeling(ev):
        if ev["event"] == "labeling":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start(registry, "al-k", "al0", "emt", seeds, settings(iterations=1, per_iteration=4),
              client=client, on_event=ctrl_c_at_labeling)
    status = registry_status(registry, "al-k")
    assert status["state"] == "stopped" and status["iterations"][0]["phase"] == "label"
    assert status["iterations"][0]["n_pending"] == 4
    train_runs = [r["id"] for r in registry.list_runs(kind="train")]
    assert len(train_runs) == 1

    script = tmp_path / "resume.py"
    script.write_text(textwrap.dedent(KILLED))
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while True:
            labs = labels_by_status(registry)
            if sum(st == "ok" for st, _ in labs.values()) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the resumed campaign never labeled"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
    before = labels_by_status(registry)
    done = {i: at for i, (st, at) in before.items() if st == "ok"}
    pending = [i for i, (st, _) in before.items() if st == "pending"]
    assert len(done) >= 2 and pending and len(done) + len(pending) == 4
    status = registry_status(registry, "al-k")
    assert status["state"] == "stopped" and status["iterations"][0]["phase"] == "label"

    real = labeling.get_labeler
    calls = []

    class Counting:
        def __init__(self, lab):
            self.lab = lab

        def __getattr__(self, name):
            return getattr(self.lab, name)

        def label(self, atoms):
            calls.append(1)
            return self.lab.label(atoms)

    monkeypatch.setattr(labeling, "get_labeler", lambda spec, **kw: Counting(real(spec)))
    out = resume(registry, "al-k", client=client)
    assert out["state"] == "finished" and len(calls) == len(pending)
    after = labels_by_status(registry)
    assert {i: after[i][1] for i in done} == done  # finished labels were not redone
    assert all(after[i][0] == "ok" for i in pending)
    assert [r["id"] for r in registry.list_runs(kind="train")] == train_runs
    it = out["iterations"][0]
    assert it["model_version"] == "al-k:1" and it["n_labeled"] == 4
    assert it["new_dataset_version"] == "al-k:1" and out["labels_total"] == 4
    runs = registry.list_runs(kind="active_learning")
    assert [r["status"] for r in runs] == ["ok", "interrupted", "interrupted"]


def registry_status(reg, name):
    from registry.active_learning.status import campaign_status

    return campaign_status(reg, name)


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_before_any_write(registry, cache, tmp_path, nnp, capsys):
    from pipelines.active_learning.campaign import resume, start
    from registry.errors import BadInput, NotFound

    seeds = make_start(registry, tmp_path)
    garbage = tmp_path / "seeds.xyz"
    garbage.write_text("this is not\na structure file\n")
    from ase.build import bulk

    copper = tmp_path / "cu.extxyz"
    bulk("Cu", "fcc", a=3.6, cubic=True).write(copper)
    before = al_rows(registry)
    cases = [
        ({"labeler": "dft-of-my-dreams"}, BadInput, "unknown labeler spec"),
        ({"dataset": "nope:1"}, NotFound, "unknown dataset 'nope'"),
        ({"dataset": "al0:7"}, NotFound, "no version 7"),
        ({"seeds": str(garbage)}, BadInput, "ASE cannot read it"),
        ({"seeds": str(tmp_path / "missing.xyz")}, BadInput, "no such file"),
        ({"seeds": str(copper)}, BadInput, "the seeds have Cu, which dataset al0:1 lacks"),
        ({"labeler": "gfn2-xtb"}, BadInput, "labeled at emt; labeler 'gfn2-xtb' labels at"),
        ({"settings": settings(threshold=0.0)}, BadInput, "--threshold must be a finite"),
        ({"settings": settings(threshold=float("nan"))}, BadInput, "--threshold"),
        ({"settings": settings(budget=0)}, BadInput, "--budget must be a positive"),
        ({"settings": settings(ensemble=1)}, BadInput, "at least 2 members"),
        ({"settings": settings(sampler="mc")}, BadInput, "--sampler 'mc'"),
        ({"settings": settings(temperatures=[-5.0])}, BadInput, "--temperatures"),
        ({"settings": settings(train_config={"hiden": [8]})}, BadInput, "unknown config key"),
    ]
    for change, kind, text in cases:
        args = {"dataset": "al0", "labeler": "emt", "seeds": seeds, "settings": settings(),
                **change}
        with pytest.raises(kind, match=text):
            start(registry, "al-bad", args["dataset"], args["labeler"], args["seeds"],
                  args["settings"])
    with pytest.raises(NotFound, match="no active-learning campaign 'ghost'"):
        resume(registry, "ghost")
    # the command line: one error line, exit status 2
    for argv, text in (
            (("al", "start", "x", "-d", "al0", "-l", "emt", "-s", seeds, "--threshold", "-1"),
             "--threshold must be"),
            (("al", "start", "x", "-d", "al0", "-l", "emt", "-s", seeds, "--temperatures",
              "300,hot"), "--temperatures '300,hot'"),
            (("al", "resume", "ghost"), "no active-learning campaign"),
            (("al", "status", "ghost"), "no active-learning campaign")):
        capsys.readouterr()
        assert nnp(*argv) == 2
        assert text in capsys.readouterr().err
    assert al_rows(registry) == before


# ---------------------------------------------------------------------- sampling, selection
class FakeCommittee:
    """EMT as a two-member committee whose members differ by 1 meV per atom."""

    def __new__(cls):
        from ase.calculators.calculator import Calculator, all_changes
        from ase.calculators.emt import EMT

        class _C(Calculator):
            implemented_properties = ["energy", "forces", "energies"]

            def calculate(self, atoms=None, properties=("energy",),
                          system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                a = self.atoms.copy()
                a.calc = EMT()
                e = a.get_potential_energy()
                self.results = {"energy": e, "forces": a.get_forces(),
                                "energies": np.array([e, e + 1e-3 * len(a)])}

        return _C()


def test_nms_amplitudes_scale_with_temperature():
    from pipelines.active_learning.sampling import nms_frames

    atoms = al_cell(np.random.default_rng(1), 0.0)
    s = {"steps": 3, "min_distance": 0.5, "max_force": 0.0}
    cold, n, _ = nms_frames(atoms, FakeCommittee(), s, 300.0, seed=4)
    hot, _, _ = nms_frames(atoms, FakeCommittee(), s, 1200.0, seed=4)
    assert n == 3 and len(cold) == len(hot) == 3
    d_cold = np.array([f["positions"] - atoms.positions for f in cold])
    d_hot = np.array([f["positions"] - atoms.positions for f in hot])
    assert np.abs(d_cold).max() > 1e-3
    np.testing.assert_allclose(d_hot, 2.0 * d_cold, atol=1e-9)  # amplitude ∝ √T
    assert cold[0]["rho"] == pytest.approx(1e-3 * 8 / np.sqrt(2) / np.sqrt(8))


def test_md_stops_at_a_close_contact_and_records_why():
    from pipelines.active_learning.sampling import md_frames

    atoms = al_cell(np.random.default_rng(2), 0.0)
    s = {"steps": 10, "interval": 2, "timestep_fs": 2.0, "friction_per_fs": 0.02,
         "min_distance": 3.0, "max_force": 0.0}  # fcc Al neighbours are 2.86 Å apart
    frames, done, reason = md_frames(atoms, FakeCommittee(), s, 300.0, seed=0)
    assert frames == [] and done == 0 and "closer than --min-distance 3 Å" in reason
    s["min_distance"] = 0.5
    frames, done, reason = md_frames(atoms, FakeCommittee(), s, 300.0, seed=0)
    assert reason is None and done == 10 and [f["step"] for f in frames] == [0, 2, 4, 6, 8, 10]
    assert all(f["cell"] is not None and f["pbc"].all() for f in frames)


def test_selection_spreads_dedups_and_keeps_apart():
    from pipelines.active_learning.selection import select

    # trajectory 0 is uncertain everywhere, 1 a little, 2 not at all
    table = {"id": np.arange(100, 112), "trajectory": np.repeat([0, 1, 2], 4),
             "step": np.tile([0, 10, 20, 30], 3),
             "rho": np.array([0.9, 0.8, 0.7, 0.6, 0.05, 0.3, 0.04, 0.03, 0, 0, 0, 0.001]),
             "hash": [f"h{i}" for i in range(12)]}
    out = select(table, threshold=0.02, m=3, exclude_hashes=set(), separation=10)
    # one per trajectory above threshold first (0 then 1), then trajectory 0 again but not
    # next to its first pick (step 10 is within the separation of step 0)
    assert out["ids"] == [100, 102, 105]
    assert out["fraction_above"] == pytest.approx(8 / 12)
    table["hash"][2] = "h0"  # a duplicate of the first pick, and an already labeled frame
    out = select(table, threshold=0.02, m=3, exclude_hashes={"h5"}, separation=0)
    assert out["ids"] == [100, 101, 104]
    rnd = select(table, threshold=0.02, m=5, method="random", seed=[0, 1])
    assert len(rnd["ids"]) == 5 and set(rnd["ids"]) <= set(table["id"].tolist())
    assert select(table, threshold=5.0, m=3)["ids"] == []


# ------------------------------------------------------------------ extended dataset versions
def test_extended_version_keeps_splits_and_groups(registry):
    """Old members keep their split, a new conformer joins its formula's split, an identical
    extension is found rather than made twice, and labels of another level are refused."""
    from ase.build import molecule
    from sqlalchemy import select

    from registry.curation.extend import extend_dataset_version
    from registry.errors import BadInput
    from registry.store.schema import Label

    rng = np.random.default_rng(3)

    def conformers(name, n, level="emt"):
        out = []
        for _ in range(n):
            a = molecule(name)
            a.positions += rng.normal(scale=0.05, size=a.positions.shape)
            a.info["energy"] = float(rng.normal())
            out.append(a)
        registry.ingest(out, level)

    for name in ("H2O", "CH4", "NH3", "C2H6", "CH3OH"):
        conformers(name, 3)
    base = registry.create_dataset_version("mols", levels=["emt"], split="0.6,0.2,0.2")
    with registry.session() as s:
        old = set(s.scalars(select(Label.id)))
    conformers("CH4", 2)
    conformers("C6H6", 1)
    with registry.session() as s:
        new = sorted(set(s.scalars(select(Label.id))) - old)
    v = extend_dataset_version(registry, "mols:1", "mols-al", new, note="test")
    assert v["created"] and v["added"] == 3 and v["n_structures"] == 18
    assert v["params"]["extends"] == "mols:1" and v["params"]["group_by"] == "formula"
    diff = registry.diff_datasets("mols:1", v["ref"])
    assert (diff["added"], diff["removed"], diff["split_changed"]) == (3, 0, 0)
    splits = split_by_formula(registry, v["id"])
    assert len(splits["CH4"]) == 1  # the new CH4 conformers joined CH4's split
    again = extend_dataset_version(registry, "mols:1", "mols-al", new)
    assert not again["created"] and again["ref"] == v["ref"]
    assert extend_dataset_version(registry, v["ref"], "mols-al", new,
                                  allow_empty=True)["added"] == 0
    with pytest.raises(BadInput, match="already in"):
        extend_dataset_version(registry, v["ref"], "mols-al", new)
    conformers("H2O", 1, level="pbe/sz")
    with registry.session() as s:
        other = max(s.scalars(select(Label.id)))
    with pytest.raises(BadInput, match="not an ok label at emt"):
        extend_dataset_version(registry, "mols:1", "mols-al", [other])
    assert base["version"] == 1 and len(registry.list_datasets()) == 2


def split_by_formula(reg, version_id: int) -> dict:
    from sqlalchemy import select

    from registry.store.schema import Composition, DatasetMember, Structure

    with reg.session() as s:
        rows = s.execute(select(Composition.formula_reduced, DatasetMember.split)
                         .join(Structure, Structure.id == DatasetMember.structure_id)
                         .join(Composition, Composition.id == Structure.composition_id)
                         .where(DatasetMember.version_id == version_id)).all()
    out: dict[str, set] = {}
    for f, sp in rows:
        out.setdefault(f, set()).add(sp)
    return out


def test_an_error_marks_the_campaign_failed_and_resumable(registry, client, cache, tmp_path,
                                                          monkeypatch):
    from pipelines.active_learning.campaign import start
    from pipelines.training import ensemble
    from registry.active_learning.campaigns import check_resumable

    seeds = make_start(registry, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("out of disk (test)")

    monkeypatch.setattr(ensemble, "train", broken)
    with pytest.raises(RuntimeError, match="out of disk"):
        start(registry, "al-f", "al0", "emt", seeds, settings(), client=client)
    status = registry_status(registry, "al-f")
    assert status["state"] == "failed" and status["error"] == "RuntimeError: out of disk (test)"
    assert status["iterations"][0]["phase"] == "train"
    assert check_resumable(registry, "al-f")["state"] == "failed"
    assert registry.list_runs(kind="active_learning")[0]["status"] == "failed"
