"""Layering: the registry imports no torch, dask or pipelines; the CLI starts without them."""

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import registry
for m in pkgutil.walk_packages(registry.__path__, "registry."):
    importlib.import_module(m.name)
import registry.core
bad = sorted(n for n in sys.modules if n.split(".")[0] in {"torch", "dask", "distributed",
                                                            "pipelines", "matplotlib"})
print(",".join(bad))
"""


def test_registry_imports_no_compute_stack():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_cli_start_imports_no_heavy_modules():
    code = ("import sys; import pipelines.cli; print(','.join(sorted(n for n in sys.modules "
            "if n.split('.')[0] in {'torch','dask','distributed','matplotlib','ase','h5py',"
            "'scipy','optimade'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
