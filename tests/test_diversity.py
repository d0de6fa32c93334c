"""t-SNE diversity maps and numbers (``nnp diversity``), on both backends.

Tiny data built here: rattled H2O, CH4 and NH3 labelled with EMT; version 1 of dataset ``w``
holds the waters, version 2 everything (AL iteration 2 adds CH4 and NH3). Maps use perplexity
5 on a few hundred environments; Dask is the module's in-process cluster.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import emt_frames

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

LEVEL = "emt"


def make_chain(reg) -> None:
    reg.ingest(emt_frames(n_per_molecule=20, forces=False), LEVEL)
    reg.create_dataset_version("w", levels=[LEVEL], filter='elements HAS "O"')
    reg.create_dataset_version("w", levels=[LEVEL])


def n_runs(reg) -> int:
    return len(reg.list_runs(kind="diversity", limit=1000))


@pytest.fixture
def scheduler(client, monkeypatch):
    """The CLI's Dask work goes to the module's in-process cluster."""
    monkeypatch.setenv("NNP_DASK_SCHEDULER", client.scheduler.address)
    return client


# ------------------------------------------------------------------ pieces without a database
def test_stratified_sample_keeps_every_stratum_and_proportions():
    from pipelines.diversity.sampling import allocate, strata, stratified_sample

    labels = np.repeat([0, 1, 2], [900, 90, 10])
    idx = stratified_sample(labels, 100, np.random.default_rng(0))
    assert len(idx) == 100 and len(set(idx)) == 100 and (np.diff(idx) > 0).all()
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == allocate(np.array([900, 90, 10]), 100).tolist()
    assert counts[2] >= 1 and abs(counts[0] - 89) <= 1
    again = stratified_sample(labels, 100, np.random.default_rng(0))
    assert (idx == again).all()
    assert stratified_sample(labels, 5000, np.random.default_rng(0)).tolist() == \
        list(range(1000))
    assert allocate(np.array([5, 3, 2]), 2).tolist() == [1, 1, 0]
    codes = strata(np.array([0, 0, 1, 1]), np.array([1, 2, 1, 1]))
    assert codes[2] == codes[3] and len(set(codes.tolist())) == 3


def test_metrics_on_known_sets():
    from pipelines.diversity import metrics
    from pipelines.diversity.neighbors import nearest

    rng = np.random.default_rng(1)
    centres = np.eye(4) * 10.0
    blobs = np.concatenate([c + rng.normal(scale=0.01, size=(50, 4)) for c in centres])
    r = metrics.resolution(blobs, rng)
    assert 2 < r < 5  # a quarter of the median pairwise distance (~14)
    # four tight, far-apart kinds of environment: about four effective environments
    assert metrics.effective_environments(blobs, r, rng) == pytest.approx(4, rel=0.05)
    assert metrics.effective_environments(np.repeat(blobs[:1], 30, 0), r, rng) == \
        pytest.approx(1)
    assert metrics.coverage(blobs, blobs[:100], r, rng) == pytest.approx(0.5)
    assert metrics.novel_fraction(blobs[100:], blobs[:100], r, rng) == pytest.approx(1.0)
    assert metrics.mean_nn_distance(blobs, rng) < r
    # a set is its own reference: covered entirely, found without a search
    assert metrics.coverage(blobs, blobs, r, rng) == 1.0
    assert metrics.set_numbers(blobs, None, r, rng)["coverage"] == 1.0
    assert metrics.set_numbers(blobs[:0], None, r, rng)["coverage"] is None
    x = rng.normal(size=(60, 5))
    idx, dist = nearest(x[:7], x, 3, exclude_self=True)
    full = np.linalg.norm(x[:7, None] - x[None], axis=2)
    np.fill_diagonal(full[:, :7], np.inf)
    assert (idx == np.argsort(full, axis=1)[:, :3]).all()
    assert np.allclose(dist, np.sort(full, axis=1)[:, :3])


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_over_several_blocks(monkeypatch, k, exclude_self):
    """Every selection path (argmin passes for k <= 2, a partition above), blocks of a few
    query rows, against a float64 brute force."""
    from pipelines.diversity import neighbors

    monkeypatch.setattr(neighbors, "_BLOCK_BYTES", 4 * 200 * 3)  # 3 query rows per block
    x = np.random.default_rng(3).normal(size=(200, 6))
    idx, dist = neighbors.nearest(x[:11], x, k, exclude_self=exclude_self)
    full = np.linalg.norm(x[:11, None] - x[None], axis=2)
    if exclude_self:
        np.fill_diagonal(full[:, :11], np.inf)
    assert (idx == np.argsort(full, axis=1)[:, :k]).all()
    assert np.allclose(dist, np.sort(full, axis=1)[:, :k])


def test_fit_runs_in_locality_order_and_answers_in_the_callers_order():
    from pipelines.diversity.embedding import fit_map, locality_order

    rng = np.random.default_rng(4)
    label = np.arange(150) % 3  # three clusters, interleaved row by row
    x = rng.normal(size=(150, 6)) + 12 * label[:, None]
    order = locality_order(x)
    assert sorted(order.tolist()) == list(range(150))
    # neighbours in feature space become neighbours in memory (149 cluster changes before)
    assert (np.diff(label[order]) != 0).sum() <= 15
    assert (locality_order(x) == order).all()  # no randomness
    coords = fit_map(x, 5, 0)
    d = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (label[d.argmin(axis=1)] == label).all()  # row i's point is row i's
    assert locality_order(np.ones((5, 3))).tolist() == list(range(5))


@pytest.mark.parametrize("gradient", ["bh", "fft"])
def test_transform_places_new_points_and_keeps_the_map(monkeypatch, gradient):
    from pipelines.diversity import embedding
    from pipelines.diversity.embedding import extend_map, fit_map

    # both gradients: Barnes-Hut below FFT_FROM map points, FFT from there
    monkeypatch.setattr(embedding, "FFT_FROM", 10 ** 9 if gradient == "bh" else 1)
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(60, 6)) + 12 * k for k in range(3)])
    coords = fit_map(x, 5, 0)
    new = rng.normal(size=(10, 6)) + 24  # like the third cluster
    old, placed = extend_map(coords, x, new, 0)
    shift = old - coords
    assert np.allclose(shift, shift[0])  # transform only centres the reference points
    third = old[120:]
    near = np.linalg.norm(placed[:, None] - third[None], axis=2).min(axis=1)
    others = np.linalg.norm(placed[:, None] - old[None, :120], axis=2).min(axis=1)
    assert (near < others).all()


# ------------------------------------------------------------------ the pipeline
def test_map_is_stored_reused_and_extended_by_iteration(registry, client, cache, tmp_path):
    from pipelines.diversity import diversity
    from pipelines.diversity.store import MAP, StoredMap

    make_chain(registry)
    a = diversity(registry, ["w:1"], elements=["H"], perplexity=5, sample=500,
                  output=tmp_path / "a.png", client=client)
    h = a["elements"]["H"]
    assert h["map"]["mode"] == "fit" and h["n_environments"] == 40
    assert h["coverage"] == 1.0 and h["n_sampled"] == 40  # the set is its own reference
    assert 1 <= h["effective_environments"] <= 40 and h["mean_nn_distance"] > 0
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    stored = StoredMap.from_bytes(registry.artifacts.get(h["map"]["sha256"]))
    assert stored.coords.shape == (40, 2) and stored.features.shape == (40, 384)
    assert stored.meta["element"] == "H" and stored.meta["refs"] == ["w:1"]
    run = registry.get_run(a["run_id"])
    assert run["status"] == "ok" and run["kind"] == "diversity"
    assert [e["ref"] for e in run["inputs"] if e["entity_type"] == "dataset_version"] == ["w:1"]
    assert [e["sha256"] for e in run["outputs"] if e["entity_type"] == MAP] == \
        [h["map"]["sha256"]]

    again = diversity(registry, ["w:1"], elements=["H"], perplexity=5, sample=500,
                      output=tmp_path / "b.png", client=client)
    assert again["elements"]["H"]["map"]["mode"] == "reused"
    assert again["elements"]["H"]["map"]["sha256"] == h["map"]["sha256"]
    assert again["elements"]["H"]["effective_environments"] == h["effective_environments"]

    both = diversity(registry, ["w:1", "w:2"], elements=["H"], perplexity=5, sample=500,
                     color_by="iteration", output=tmp_path / "c.png", client=client)
    hb = both["elements"]["H"]
    assert hb["map"]["mode"] == "extended" and hb["n_environments"] == 180
    assert hb["map"]["n_points"] == 180 and hb["map"]["n_transformed"] == 140
    ext = StoredMap.from_bytes(registry.artifacts.get(hb["map"]["sha256"]))
    assert ext.meta["base"] == h["map"]["sha256"]
    base_of = {(s, t): k for k, (s, t) in enumerate(zip(stored.structure_id, stored.atom,
                                                        strict=True))}
    kept = [(k, base_of[(s, t)]) for k, (s, t) in enumerate(zip(ext.structure_id, ext.atom,
                                                                strict=True))
            if (s, t) in base_of]
    assert len(kept) == 40
    shift = ext.coords[[k for k, _ in kept]] - stored.coords[[j for _, j in kept]]
    assert np.allclose(shift, shift[0], atol=1e-4)  # the first iteration did not move
    its = {i["iteration"]: i for i in hb["per_iteration"]}
    assert sorted(its) == [1, 2] and its[1]["n_new"] == 40 and its[2]["n_new"] == 140
    assert its[1]["novel_fraction"] is None and its[2]["novel_fraction"] > 0.5
    assert its[2]["coverage"] == 1.0 and its[1]["coverage"] < 0.5
    pv = hb["per_version"]
    assert pv["w:1"]["coverage"] == its[1]["coverage"] and pv["w:2"]["coverage"] == 1.0
    assert pv["w:2"]["effective_environments"] > pv["w:1"]["effective_environments"]

    refit = diversity(registry, ["w:1", "w:2"], elements=["H"], perplexity=5, sample=60,
                      output=tmp_path / "d.png", client=client, refit=True,
                      color_by="energy")
    assert refit["elements"]["H"]["map"]["mode"] == "fit"
    assert refit["elements"]["H"]["map"]["n_points"] == 60  # stratified sample of 180
    assert refit["elements"]["H"]["n_sampled"] == 60


def test_cli_json_dataset_show_and_colours(registry, scheduler, cache, nnp, capsys, tmp_path):
    make_chain(registry)
    png = tmp_path / "m.png"
    assert nnp("diversity", "w:1", "w:2", "--element", "O", "--element", "C",
               "--perplexity", "5", "--color-by", "source", "-o", png, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["elements"]) == {"C", "O"} and out["png"] == str(png)
    for sym in ("C", "O"):
        e = out["elements"][sym]
        assert {"n_environments", "coverage", "mean_nn_distance", "effective_environments",
                "png"} <= set(e)
        assert e["map"]["artifact"] == f"sha256:{e['map']['sha256']}"
    assert out["elements"]["C"]["per_version"]["w:1"]["n_environments"] == 0
    assert out["elements"]["C"]["per_version"]["w:1"]["coverage"] is None
    assert png.read_bytes().startswith(b"\x89PNG")
    assert nnp("dataset", "show", "w:2", "--json") == 0
    shown = json.loads(capsys.readouterr().out)["diversity"]
    assert shown[0]["features"] == "aev" and shown[0]["reference"] == "w:1+w:2"
    assert shown[0]["elements"]["O"]["coverage"] == 1.0
    assert nnp("dataset", "show", "w:2") == 0
    assert "diversity (aev, coverage of w:1+w:2" in capsys.readouterr().out
    # the same inputs: the maps are reused, so only the picture is drawn again
    assert nnp("diversity", "w:1", "w:2", "-e", "O", "-e", "C", "--perplexity", "5",
               "--color-by", "split", "-o", tmp_path / "s.png") == 0
    text = capsys.readouterr().out
    assert "reused" in text and (tmp_path / "s.png").is_file()


BAD = [
    (["w:1", "-e", "C"], "element C is not in w:1"),
    (["w:1", "-e", "Xx"], "unknown element 'Xx'"),
    (["w:1", "--sample", "12", "--perplexity", "5"], "needs more than 3 × perplexity = 15"),
    (["w:1", "-e", "O", "--perplexity", "8"], "element O: 20 environments are too few"),
    (["w:1", "--features", "soap"], "unknown feature source 'soap'"),
    (["w:1", "--features", "model:nosuch"], "unknown model 'nosuch'"),
    (["w:9"], "has no version 9"),
    (["w:1", "--reference", "nosuch"], "unknown dataset 'nosuch'"),
    (["w:1", "--color-by", "mood"], "--color-by 'mood'"),
    (["w:1", "--perplexity", "-1"], "--perplexity must be a positive number"),
    (["w:1", "--seed", "-3"], "--seed -3 is out of range"),
    (["w:1", "-o", "map.jpg"], "name a .png file"),
    (["w:1", "-o", "no/such/folder/map.png"], "does not exist"),
]


def test_bad_input_is_refused_before_any_work(registry, cache, nnp, capsys, tmp_path,
                                              monkeypatch):
    make_chain(registry)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for args, message in BAD:
        assert nnp("diversity", *args) == 2, args
        err = " ".join(capsys.readouterr().err.split())
        assert "error:" in err and message in err, (args, err)
    assert n_runs(registry) == 0 and not list(work.iterdir())  # no run, no file


def test_model_embedding_and_numbers_of_a_periodic_version(registry, client, cache, tmp_path):
    from ase.calculators.emt import EMT
    from helpers import crystal

    from pipelines.diversity import diversity, diversity_numbers
    from pipelines.training.ani import check_config, new_member
    from pipelines.training.torch_io import register_torch_model
    from registry.errors import BadInput

    make_chain(registry)
    cfg = check_config({"hidden": [8, 4], "elements": ["H", "C", "N", "O"],
                        "radial_shifts": 4, "angular_shifts": 2, "angular_sections": 2})
    register_torch_model(registry, "m", [new_member(cfg, 0), new_member(cfg, 1)],
                         architecture="ani", config={**cfg, "arch": "ani"},
                         elements=cfg["elements"], cutoff=5.2)
    out = diversity(registry, ["w:2"], elements=["O"], features="model:m", perplexity=5,
                    output=tmp_path / "m.png", client=client)
    o = out["elements"]["O"]
    assert out["features"] == "model:m:1" and o["map"]["mode"] == "fit"
    stored = registry.artifacts.get(o["map"]["sha256"])
    from pipelines.diversity.store import StoredMap

    assert StoredMap.from_bytes(stored).features.shape == (20, 8)  # 2 members × 4 units
    run = registry.get_run(out["run_id"])
    assert any(e["entity_type"] == "model_version" and e["ref"] == "m:1"
               for e in run["inputs"])
    first = diversity_numbers(registry, "w:2", elements=["H"], features="model:m",
                              client=client)
    again = diversity_numbers(registry, "w:2", elements=["H"], features="model:m",
                              client=client)
    assert not first["reused"] and again["reused"] and again["run_id"] == first["run_id"]
    assert again["elements"]["H"]["effective_environments"] == \
        first["elements"]["H"]["effective_environments"]
    assert [i["iteration"] for i in first["elements"]["H"]["per_iteration"]] == [1, 2]

    small = check_config({"hidden": [4], "elements": ["H", "O"]})
    register_torch_model(registry, "ho", new_member(small, 0), architecture="ani",
                         config={**small, "arch": "ani"}, elements=["H", "O"], cutoff=5.2)
    with pytest.raises(BadInput, match="the model handles H, O; the data also has C, N"):
        diversity_numbers(registry, "w:2", features="model:ho", client=client)

    cells = []
    for seed in range(6):
        c = crystal(seed)
        c.calc = EMT()
        c.info["energy"] = c.get_potential_energy()
        c.calc = None
        cells.append(c)
    registry.ingest(cells, LEVEL)
    registry.create_dataset_version("cu", levels=[LEVEL], filter='elements HAS "Cu"')
    cu = diversity_numbers(registry, "cu", client=client, reference="w:2")["elements"]["Cu"]
    assert cu["n_environments"] == 24 and cu["coverage"] is None  # w:2 has no copper
    numbers = diversity_numbers(registry, "cu", client=client)["elements"]["Cu"]
    assert numbers["coverage"] == 1.0 and numbers["mean_nn_distance"] > 0
