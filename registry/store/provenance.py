"""What every run records: code version (package + git), environment, timings."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from ..errors import BadInput
from .tables import model_aliases, runs


@lru_cache(maxsize=1)
def code_version() -> dict:
    """Package version and, when running from a git checkout, the commit and a dirty flag."""
    try:
        version = metadata.version("nnp-registry")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parent.parent
    commit = dirty = None
    if (root / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                timeout=5, check=True,
            ).stdout.strip() or None
            status = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout
            dirty = bool(status.strip())
        except (OSError, subprocess.SubprocessError):
            commit = dirty = None
    return {"version": version, "git_commit": commit, "git_dirty": dirty}


@lru_cache(maxsize=1)
def environment() -> dict:
    """Python, platform, host and, if already imported, torch / CUDA versions."""
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }
    torch = sys.modules.get("torch")  # never import torch from the registry
    if torch is not None:
        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return env


def current_user() -> str:
    """``NNP_USER``, else the login name; :class:`BadInput` if it is longer than the user
    columns (``runs.user``, ``model_aliases.updated_by``) hold.

    Refused rather than cut: every write records its user, and a cut name would silently
    attribute the work to someone else (PostgreSQL would refuse the row; SQLite store it whole).
    """
    env = os.environ.get("NNP_USER")
    if env:
        user, where = env, "NNP_USER"
    else:
        try:
            user, where = getpass.getuser(), "the login name (set NNP_USER)"
        except (KeyError, OSError):
            return "unknown"
    limit = min(runs.c.user.type.length, model_aliases.c.updated_by.type.length)
    if len(user) > limit:
        raise BadInput(f"{where} is longer than {limit} characters ({len(user)}); "
                       "use a shorter name")
    return user
