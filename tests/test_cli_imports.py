"""A cold CLI imports only what the command needs (docs/architecture.md: CLI modules import
heavy packages inside command bodies; docs/performance.md#cli-start-up).

Each case runs the command in a new ``python -c`` process and lists the packages it loaded.
The lists come from ``python -X importtime``: these are the imports that cost a cold start
most (the compute stack, ASE, numpy, the ORM, the migrations, the whole ``Registry``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

COMPUTE = {"torch", "torchani", "hippynn", "dask", "distributed", "matplotlib", "scipy",
           "pandas", "openTSNE", "tblite", "pyscf"}
# loaded by no quick command: files, arrays, the ORM, migrations, the registry facade
FILES_AND_ORM = {"ase", "h5py", "numpy", "fsspec", "alembic", "sqlalchemy.orm",
                 "registry.core", "registry.ingest", "registry.curation", "registry.io"}
# `nnp --help` loads typer and rich, nothing of the registry but its error classes
HELP_FORBIDDEN = COMPUTE | FILES_AND_ORM | {"sqlalchemy", "lark", "optimade", "psycopg",
                                            "safetensors", "yaml"}

RUN = """
import json, sys
from pipelines.cli import main
rc = main(sys.argv[1:])
names = set(sys.modules)
print("\\nMODULES " + json.dumps({"rc": rc, "modules": sorted(names)}))
"""


def loaded(argv: list[str], env: dict | None = None) -> set[str]:
    """Modules (and their packages) a new process imported running ``nnp ARGV``."""
    out = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    line = [x for x in out.stdout.splitlines() if x.startswith("MODULES ")]
    assert line, out.stderr[-2000:]
    got = json.loads(line[-1][len("MODULES "):])
    assert got["rc"] == 0, (argv, out.stderr[-2000:])
    return set(got["modules"])


def heavy(modules: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in modules if m in forbidden or m.split(".")[0] in forbidden)


def test_help_imports_no_heavy_package():
    mods = loaded(["--help"])
    assert not heavy(mods, HELP_FORBIDDEN), heavy(mods, HELP_FORBIDDEN)
    # every command module was imported, so each one's top-level imports were checked
    cli = Path(__file__).resolve().parents[1] / "pipelines" / "cli"
    names = {p.stem for p in cli.glob("*.py")} - {"__init__", "docgen"}
    assert {f"pipelines.cli.{n}" for n in names} <= mods


@pytest.fixture
def workspace(registry, tmp_path, monkeypatch):
    """A registry (both backends) holding a few molecules and a model with an alias."""
    from helpers import labelled_molecules

    registry.ingest(labelled_molecules(), "pbe")
    weights = tmp_path / "w.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32)}, str(weights))
    registry.register_model("m", [str(weights)], architecture="ani")
    registry.set_model_alias("m:1", "production")
    return {"NNP_DATABASE_URL": registry.url, "NNP_ARTIFACTS": os.environ["NNP_ARTIFACTS"],
            "out": str(tmp_path / "pulled")}


def test_quick_commands_import_neither_orm_nor_files_nor_compute(workspace):
    env = {k: v for k, v in workspace.items() if k.startswith("NNP_")}
    for argv in (["query", 'elements HAS "C" AND nsites <= 8 AND _nnp_levels HAS "pbe"',
                  "--count"],
                 ["stats", "--json"],
                 ["models", "pull", "m@production", "-o", workspace["out"]]):
        mods = loaded(argv, env)
        bad = heavy(mods, COMPUTE | FILES_AND_ORM)
        assert not bad, (argv, bad)


def test_ingest_imports_neither_other_stages_nor_ase(workspace, tmp_path):
    """`nnp ingest` of an HDF5 file in eV loads the ingest stage and its reader only: not the
    Registry facade (curation, queries, models, training data), not ASE, not the compute
    stack."""
    import h5py

    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as fh:
        grp = fh.create_group("mol0")
        grp["species"] = np.array([b"C", b"H", b"H", b"H", b"H"])
        grp["coordinates"] = np.random.default_rng(0).normal(size=(3, 5, 3))
        grp["energies"] = np.array([-1.0, -1.1, -1.2])
    env = {k: v for k, v in workspace.items() if k.startswith("NNP_")}
    mods = loaded(["ingest", str(path), "--level", "pbe", "--json"], env)
    bad = heavy(mods, COMPUTE | {"ase", "registry.core", "registry.curation",
                                 "registry.query", "registry.models",
                                 "registry.training_data"})
    assert not bad, bad
    assert "registry.ingest.stream" in mods and "h5py" in mods
