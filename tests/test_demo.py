"""The main job end to end (small sizes), on both backends, twice: the rerun adds no data."""

from rich.console import Console

from pipelines.demo import DATASET, MODEL, DemoConfig, run_demo


def test_demo_end_to_end(registry, tmp_path):
    cfg = DemoConfig(frames_per_molecule=4, epochs=3, out_dir=tmp_path / "out")
    console = Console(file=open(tmp_path / "log.txt", "w"), width=120)  # noqa: SIM115
    first = run_demo(cfg, console)
    n = 10 * 4  # molecules x frames
    assert first["ingest"]["emt"]["structures_new"] == n
    assert first["ingest"]["emt"]["labels_new"] == n
    assert first["ingest"]["gfn2-xtb"]["labels_new"] == n // cfg.high_every
    assert first["ingest"]["gfn2-xtb"]["structures_new"] == 0
    assert first["stats"]["structures"] == n
    assert (cfg.out_dir / "demo.extxyz").stat().st_size > 0
    assert first["dataset"]["n_structures"] == n
    assert sum(first["dataset"]["splits"].values()) == n
    assert first["model"]["ref"] == f"{MODEL}:1"
    for png in (first["model"]["parity_png"], first["model"]["lineage_png"]):
        with open(png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    lin = registry.lineage(f"{MODEL}@production")
    assert lin["dataset_version"]["ref"] == f"{DATASET}:1"

    second = run_demo(cfg, console)  # same seed: same MD, nothing new in the store
    assert second["ingest"]["emt"]["structures_new"] == 0
    assert second["ingest"]["emt"]["labels_existing"] == n
    assert second["dataset"]["hash"] == first["dataset"]["hash"]
    assert second["model"]["ref"] == f"{MODEL}:2"
