"""The main job end to end (small sizes), on both backends, twice: the rerun adds no data."""

import os

from rich.console import Console

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

from pipelines.demo import DATASET, LEVEL, MODEL, SECOND, DemoConfig, run_demo


def test_demo_end_to_end(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("NNP_CACHE", str(tmp_path / "cache"))
    cfg = DemoConfig(frames_per_molecule=4, epochs=2, members=2, md_steps=20,
                     al_per_iteration=4, diversity_sample=500, diversity_perplexity=5,
                     out_dir=tmp_path / "out")
    console = Console(file=open(tmp_path / "log.txt", "w"), width=120)  # noqa: SIM115
    first = run_demo(cfg, console)
    n = 10 * 4  # molecules x frames
    assert first["ingest"][LEVEL]["structures_new"] == n
    assert first["ingest"][LEVEL]["labels_new"] == n
    assert first["ingest"][SECOND]["labels_new"] == n // cfg.second_every
    assert first["ingest"][SECOND]["structures_new"] == 0
    assert first["stats"]["structures"] == n
    assert (cfg.out_dir / "demo.extxyz").stat().st_size > 0
    assert first["dataset"]["n_structures"] == n
    assert sum(first["dataset"]["splits"].values()) == n
    assert first["model"]["ref"] == f"{MODEL}:1"
    assert (first["model"]["architecture"], first["model"]["members"]) == ("ani", 2)
    v = registry.show_model(f"{MODEL}@production")
    assert (v["architecture"], v["n_members"], v["version"]) == ("ani", 2, 1)
    assert registry.get_run(first["model"]["run_id"])["kind"] == "train"
    # the closing MD: frames written (step 0 and every 10th), energy_std in each, a run
    import ase.io

    md = first["md"]
    frames = ase.io.read(md["output"], index=":")
    assert md["model"] == f"{MODEL}:1" and md["frames"] == len(frames) >= 1
    assert frames[0].info["step"] == 0 and all("energy_std" in f.info for f in frames)
    if md["stop_reason"] is None:
        assert (md["steps_done"], md["frames"]) == (20, 3)
    run = registry.get_run(md["run_id"])
    assert run["kind"] == "md" and run["status"] == "ok"
    assert [e["ref"] for e in run["inputs"] if e["entity_type"] == "model_version"] == \
        [f"{MODEL}:1"]
    assert [e["sha256"] for e in run["outputs"]] == [md["sha256"]]
    for png in (first["model"]["parity_png"], first["model"]["lineage_png"]):
        with open(png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    lin = registry.lineage(f"{MODEL}@production")
    assert lin["dataset_version"]["ref"] == f"{DATASET}:1"

    # the campaign: two iterations, each a committee, labels, a new version of the dataset
    al = first["active_learning"]
    assert (al["name"], al["state"], al["dataset"]) == ("demo-al", "finished", f"{DATASET}:1")
    assert [it["iteration"] for it in al["iterations"]] == [0, 1]
    assert al["labels_total"] == sum(it["n_labeled"] for it in al["iterations"]) > 0
    new = [it["new_dataset_version"] for it in al["iterations"] if it["new_dataset_version"]]
    assert new == ["demo-al:1", "demo-al:2"]
    grown = registry.show_dataset(new[-1])
    assert grown["n_structures"] == n + al["labels_total"]
    # the map: every version of the campaign, coloured by iteration, numbers stored per version
    div = first["diversity"]
    assert div["refs"] == new
    with open(div["png"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(div["elements"]) == {"H", "C"}
    # iteration 0: the starting data; k: the labels AL iteration k - 1 added
    assert div["elements"]["C"]["iterations"] == [0] + [
        it["iteration"] + 1 for it in al["iterations"] if it["n_labeled"]]
    last = registry.materialize(new[-1])  # the chain is nested: its last version holds all
    assert div["elements"]["H"]["n_environments"] == sum(
        int((b["numbers"] == 1).sum()) for b in last.buckets)
    from pipelines.active_learning.report import status
    from pipelines.diversity.store import stored_numbers

    assert stored_numbers(registry, new[-1])[0]["elements"]["C"]["n_environments"] > 0
    shown = status(registry, "demo-al")["iterations"]
    assert [bool(it["diversity"]) for it in shown] == [bool(it["new_dataset_version"])
                                                         for it in shown]

    second = run_demo(cfg, console)  # same seed: same MD, nothing new in the store
    assert second["ingest"][LEVEL]["structures_new"] == 0
    assert second["ingest"][LEVEL]["labels_existing"] == n
    assert second["dataset"]["hash"] == first["dataset"]["hash"]
    assert second["model"]["ref"] == f"{MODEL}:2"
    # the finished campaign is reported, not run again; the map is reused
    assert second["active_learning"]["labels_total"] == al["labels_total"]
    assert second["diversity"]["refs"] == div["refs"]
