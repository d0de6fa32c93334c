"""The TorchScript export stored with each trained version runs with plain torch.

A tiny Cu ensemble is trained on EMT frames; its stored ``model.torchscript.pt`` is written
by ``nnp models export --torchscript`` and loaded in a separate Python process that can import
neither this repository nor torchani (an import hook refuses them), and must give the
calculator's energies and forces on a periodic box large enough for the cell list and on an
open cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

REPO = str(Path(__file__).resolve().parents[1])
LEVEL = "emt"
TINY = {"hidden": [16, 16], "radial_shifts": 8, "angular_shifts": 4, "batch_size": 8}

# Runs in a fresh interpreter (-I: no PYTHONPATH, no script directory on sys.path); the
# hook refuses this repository's packages and torchani, and the editable install's finder
# is dropped, so only torch can load the file.
PLAIN_TORCH = r"""
import json, os, sys
REPO, MODEL, INPUTS, OUT = sys.argv[1:5]
BLOCKED = ("registry", "pipelines", "torchani", "hippynn")
sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != REPO]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__
                    and "editable" not in getattr(f, "__name__", "")]

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be needed")
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
import torch

extra = {"nnp.json": ""}
model = torch.jit.load(MODEL, _extra_files=extra)
data = np.load(INPUTS)
out = {"nnp.json": json.loads(extra["nnp.json"])}
for key in ("box", "cluster"):
    species = torch.as_tensor(data[key + "_z"]).unsqueeze(0)
    coords = torch.tensor(data[key + "_x"], dtype=torch.float32).unsqueeze(0)
    coords.requires_grad_(True)
    cell = pbc = None
    if key == "box":
        cell = torch.tensor(data["box_cell"], dtype=torch.float32)
        pbc = torch.tensor([True, True, True])
    energy = model(species, coords, cell, pbc)
    forces = -torch.autograd.grad(energy.sum(), coords)[0]
    members = model.member_energies(species, coords.detach(), cell, pbc)
    out[key] = {"energy": energy.item(), "dtype": str(energy.dtype),
                "forces": forces[0].tolist(), "members": members[:, 0].tolist()}
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
out["path"] = [p for p in sys.path if os.path.abspath(p) == REPO]
json.dump(out, open(OUT, "w"))
"""


def cu_frames(n: int = 12):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    frames = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True) if k % 2 else \
            bulk("Cu", "fcc", a=3.55 + 0.03 * (k % 3)).repeat((2, 1, 1))
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
        frames.append(a)
    return frames


def train_cu(reg, client, **kw) -> str:
    from pipelines.training.ensemble import train

    reg.ingest(cu_frames(), LEVEL)
    reg.set_reference_energies(LEVEL, {"Cu": -3.0})
    reg.create_dataset_version("cu", levels=[LEVEL], split="0.7,0.15,0.15", group_by="none")
    args = {"ensemble": 2, "epochs": 2, "patience": 5, "config": dict(TINY), "device": "cpu",
            "verify": False, "name": "cu-ani", **kw}
    return train(reg, "cu", client=client, **args)["model"]


def structures():
    from ase.build import bulk
    from ase.cluster import Icosahedron

    box = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((4, 4, 4))     # 256: the cell list
    box.rattle(0.05, seed=7)
    box.positions[3] += box.cell[0] - 2 * box.cell[2]                 # outside the box
    box.pbc = True
    cluster = Icosahedron("Cu", 2)                                    # 13 atoms, open
    cluster.rattle(0.05, seed=8)
    return {"box": box, "cluster": cluster}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_trained_version_exports_torchscript_that_runs_without_this_package(
        registry, client, cache, nnp, tmp_path):
    from pipelines.training.calculator import NNPCalculator

    ref = train_cu(registry, client)
    shown = registry.show_model(ref)
    record = shown["metrics"]["torchscript"]
    assert record["available"] is True and record["file"] == "model.torchscript.pt"
    stored = registry.pull_model(ref).extras["model.torchscript.pt"]
    assert record["size"] == len(stored)

    path = tmp_path / "cu.pt"
    assert nnp("models", "export", ref, "--torchscript", "-o", path) == 0
    assert path.read_bytes() == stored

    calc = NNPCalculator.from_registry(ref, registry)
    expected, arrays = {}, {}
    for key, atoms in structures().items():
        a = atoms.copy()
        a.calc = calc
        expected[key] = (a.get_forces(), a.get_potential_energy(), a.calc.results["energies"])
        arrays.update({key + "_z": atoms.numbers, key + "_x": atoms.positions})
    arrays["box_cell"] = np.asarray(structures()["box"].cell)
    np.savez(tmp_path / "inputs.npz", **arrays)

    out_file = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-I", "-c", PLAIN_TORCH, REPO, str(path),
                           str(tmp_path / "inputs.npz"), str(out_file)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(out_file.read_text())
    assert out["loaded"] == [] and out["path"] == []
    assert out["nnp.json"]["units"] == {"energy": "eV", "length": "Å"}
    assert out["nnp.json"]["elements"] == ["Cu"] and out["nnp.json"]["members"] == 2
    for key, (forces, energy, members) in expected.items():
        got = out[key]
        assert got["dtype"] == "torch.float64"
        assert got["energy"] == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(got["members"], members, atol=1e-5)
        np.testing.assert_allclose(np.array(got["forces"]), forces, atol=1e-5)
    # the exported energy is torchani's (Hartree, self energies inside) plus the level's
    # reference energies, -3 eV per Cu atom
    import torch

    loaded = torch.jit.load(str(path))
    cluster = structures()["cluster"]
    species = torch.as_tensor(cluster.numbers).unsqueeze(0)
    coords = torch.tensor(cluster.positions, dtype=torch.float32).unsqueeze(0)
    with torch.no_grad():
        hartree = loaded.model((species, coords)).energies.double()
    assert out["cluster"]["energy"] == pytest.approx(
        float(hartree[0]) * 27.211386245988 - 3.0 * len(cluster), abs=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_that_cannot_be_made_is_recorded_not_fatal(registry, client, cache, nnp,
                                                          tmp_path, monkeypatch, capsys):
    import torch

    from pipelines.training import potential

    class Unscriptable(potential.ANIPotential):
        def hartree_members(self, *args):  # TorchScript compiles no *args
            return super().hartree_members(*args)

    with monkeypatch.context() as patch:
        patch.setattr(potential, "ANIPotential", Unscriptable)
        ref = train_cu(registry, client, ensemble=1, epochs=1)
    shown = registry.show_model(ref)
    record = shown["metrics"]["torchscript"]
    assert record["available"] is False
    assert "variable number of arguments" in record["reason"] and "'ani'" in record["reason"]
    assert "model.torchscript.pt" not in {f["name"] for f in shown["files"]}
    capsys.readouterr()
    assert nnp("models", "show", ref) == 0
    assert "torchscript: not available" in " ".join(capsys.readouterr().out.split())
    assert nnp("models", "export", ref, "--torchscript", "-o", tmp_path / "x.pt") == 2
    assert "variable number of arguments" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()

    # a version registered by hand (no record): the export is built from its weights
    pulled = registry.pull_model(ref)
    by_hand = registry.register_model("by-hand", [pulled.blobs[f] for f in pulled.weight_files()],
                                      architecture="ani", config=pulled.config)
    assert nnp("models", "export", by_hand["ref"], "--torchscript", "-o", tmp_path / "h.pt",
               "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == "built from the weights" and info["size"] > 0
    loaded = torch.jit.load(str(tmp_path / "h.pt"))
    species = torch.tensor([[29, 29]])
    x = torch.tensor([[[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]]])
    assert torch.isfinite(loaded(species, x)).all()


def test_hipnn_export_is_recorded_as_not_available():
    """hippynn's layers take ``*args`` (ResNetWrapper.forward), which TorchScript cannot
    compile: a HIP-NN version registers with the reason instead of an export."""
    from pipelines.training import hipnn
    from pipelines.training.torch_io import state_dict_to_safetensors
    from pipelines.training.torchscript import export_record

    cfg = hipnn.check_config({"elements": ["H", "C"]})
    cfg.update(arch="hipnn", self_energies_ev={}, reference_energies_ev={"H": -0.5})
    weights = [state_dict_to_safetensors(hipnn.new_member(cfg, 0).state_dict())]
    files, record = export_record(cfg, weights)
    assert files == {} and record["available"] is False
    assert "'hipnn'" in record["reason"] and "hippynn/" in record["reason"]
