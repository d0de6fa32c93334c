"""Configuration from the environment (see the README's "Configuration" table)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path(".nnp")


def database_url() -> str:
    """`NNP_DATABASE_URL`, default a SQLite file in ``./.nnp/registry.db``."""
    url = os.environ.get("NNP_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{DEFAULT_HOME / 'registry.db'}"


def artifacts_url() -> str:
    """`NNP_ARTIFACTS`, default ``./.nnp/artifacts`` (any fsspec URL)."""
    return os.environ.get("NNP_ARTIFACTS") or str(DEFAULT_HOME / "artifacts")


def cache_dir() -> Path:
    """`NNP_CACHE`, default ``./.nnp/cache`` (materialized training arrays)."""
    return Path(os.environ.get("NNP_CACHE") or DEFAULT_HOME / "cache")


def user_cache_dir() -> Path:
    """The user's cache folder for what the code derives once per install (the filter
    parser's tables): ``$XDG_CACHE_HOME/nnp-registry``, default ``~/.cache/nnp-registry``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nnp-registry"


def dask_scheduler() -> str | None:
    """`NNP_DASK_SCHEDULER`: an address, or None for a local cluster."""
    return os.environ.get("NNP_DASK_SCHEDULER") or None
