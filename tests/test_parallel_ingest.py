"""``nnp ingest SHARD... --parallel N`` on both backends: shards read on Dask workers and
written concurrently as one run; a bad shard writes nothing."""

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from pipelines.parallel_ingest import ingest_shards
from registry.errors import BadInput
from registry.io.readers import ReadOptions


def _molecules(n: int) -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        k = int(rng.integers(3, 9))
        a = Atoms(numbers=rng.choice([1, 6, 7, 8], k), positions=rng.random((k, 3)) * 3)
        a.info["energy"] = float(-i)
        a.arrays["forces"] = rng.normal(size=(k, 3))
        out.append(a)
    return out


@pytest.fixture
def shards(tmp_path):
    """Three extxyz shards of 300 molecules; neighbours share 20 molecules."""
    mols = _molecules(300)
    paths = [tmp_path / f"{s}.extxyz" for s in "abc"]
    write(paths[0], mols[:120])
    write(paths[1], mols[100:220])
    write(paths[2], mols[200:])
    return [str(p) for p in paths]


def test_shards_are_one_run_without_duplicates(registry, shards):
    s = ingest_shards(registry, shards, ReadOptions("pbe/x"), parallel=2, batch_size=50,
                      params={"files": shards, "parallel": 2})
    assert (s.frames_read, s.structures_new, s.structures_existing) == (340, 300, 40)
    assert (s.labels_new, s.labels_existing, s.labels_conflicting) == (300, 40, 0)
    assert registry.count() == 300 and registry.count('_nnp_levels HAS "pbe/x"') == 300
    run = registry.get_run(s.run_id)
    assert run["status"] == "ok" and run["params"]["parallel"] == 2
    files = [i for i in run["inputs"] if i["entity_type"] == "file"]
    assert sorted(f["ref"] for f in files) == sorted(shards)
    assert all(len(f["sha256"]) == 64 for f in files)
    assert [i["ref"] for i in run["inputs"] if i["entity_type"] == "level"] == ["pbe/x"]
    assert run["result"]["structures_new"] == 300
    # every structure and label carries the one run
    assert registry.count(f"_nnp_run = {s.run_id}") == 300


def test_a_bad_shard_writes_nothing(registry, shards, tmp_path):
    bad = tmp_path / "bad.extxyz"
    bad.write_text("3\nenergy=oops\nH 0 0 0\n")
    with pytest.raises(BadInput, match="bad.extxyz"):
        ingest_shards(registry, [*shards, str(bad)], ReadOptions("pbe/x"), parallel=2)
    assert registry.count() == 0
    runs = registry.list_runs(kind="ingest")
    assert [r["status"] for r in runs] == ["failed"]


def test_cli_parallel(registry, shards, nnp, capsys):
    import json

    capsys.readouterr()
    assert nnp("ingest", *shards, "--level", "pbe/x", "--parallel", "2", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["structures_new"] == 300 and out["structures_existing"] == 40
    assert nnp("ingest", *shards, "--level", "pbe/x", "--parallel", "0") == 2
