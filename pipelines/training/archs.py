"""The architectures ``nnp train`` builds, by name, and dispatch on a stored config's ``arch``.

Each is a module with the same functions: ``check_config(user) -> dict`` (defaults, validation,
unknown keys refused), ``MODEL_DEFAULTS`` (its architecture keys), ``new_member(config, seed,
device, dtype)``, ``load_ensemble(config, members)`` (a module whose forward takes
``ensemble_values=True``), ``model_cutoff(config)`` and ``library_version()``:
:mod:`.ani` (torchani) and :mod:`.hipnn` (hippynn). The library of an architecture is imported
only when that architecture is used.
"""

from __future__ import annotations

import importlib

from registry.errors import BadInput

ARCHS = ("ani", "hipnn")
LIBRARIES = {"ani": "torchani", "hipnn": "hippynn"}
TITLES = {"ani": "torchani ANI", "hipnn": "hippynn HIP-NN"}


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise BadInput(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    return arch


def module(arch: str):
    """The module of architecture ``arch`` (:mod:`.ani` or :mod:`.hipnn`)."""
    return importlib.import_module(f"{__package__}.{check_arch(arch)}")


def config_arch(config: dict) -> str:
    """The architecture a stored config was trained with (configs name it; ``ani`` before)."""
    return config.get("arch") or "ani"


def check_model_arch(pulled, what: str) -> str:
    """The architecture of a pulled model version (its record and its config must agree and
    be known), else :class:`BadInput` naming ``what`` refuses it."""
    arch = pulled.info["architecture"]
    if arch not in ARCHS or (pulled.config or {}).get("arch") != arch:
        raise BadInput(f"model {pulled.ref} has architecture {arch!r}; {what} runs "
                       f"{' and '.join(repr(a) for a in ARCHS)} models")
    return arch


def new_member(config: dict, seed: int, device: str = "cpu", dtype=None):
    """A freshly initialised member of ``config``'s architecture, seeded by ``seed``."""
    return module(config_arch(config)).new_member(config, seed, device, dtype)


def load_ensemble(config: dict, members: list[dict]):
    """The members' state dicts as one model of ``config``'s architecture."""
    return module(config_arch(config)).load_ensemble(config, members)
