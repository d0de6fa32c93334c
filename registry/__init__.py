"""nnp-registry: the store and its Python API (no torch, no dask)."""

from .errors import BadInput, Conflict, DatabaseUnavailable, NotFound, RegistryError

__all__ = ["BadInput", "Conflict", "DatabaseUnavailable", "NotFound", "Registry",
           "RegistryError"]


def __getattr__(name):
    if name == "Registry":
        from .core import Registry

        return Registry
    raise AttributeError(name)
