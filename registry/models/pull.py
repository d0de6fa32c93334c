"""Pulling a model version: every file fetched and verified against its sha256.

Weights are checked as safetensors (no pickle anywhere). A retracted version, or one whose
latest verification failed, warns, or is refused with ``strict``; ``strict`` also refuses a
version that was never verified (docs/verification.md).
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import Conflict
from ..store.lookups import model_version
from ..times import json_default
from .info import MANIFEST, VERIFICATION, model_version_dict, verification_failures
from .weights import check_safetensors, load_numpy


class RetractedModelWarning(UserWarning):
    """Pulling a retracted model version."""


class FailedVerificationWarning(UserWarning):
    """Pulling a model version whose latest verification failed."""


@dataclass
class PulledModel:
    """A pulled, hash-verified model version. ``members`` decodes weights to numpy arrays."""

    name: str
    version: int
    info: dict
    blobs: dict[str, bytes] = field(repr=False)
    path: Path | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def config(self) -> dict | None:
        return self.info["config"]

    def weight_files(self) -> list[str]:
        files = [f for f in self.info["files"] if f["role"] == "weights"]
        return [f["name"] for f in sorted(files, key=lambda f: f["member_index"])]

    @cached_property
    def members(self) -> list[dict]:
        """One ``{tensor name: numpy array}`` dict per ensemble member."""
        return [load_numpy(self.blobs[n]) for n in self.weight_files()]

    @property
    def extras(self) -> dict[str, bytes]:
        return {f["name"]: self.blobs[f["name"]] for f in self.info["files"]
                if f["role"] == "extra"}


def pull_model(reg, ref: str, *, strict: bool = False, dest=None) -> PulledModel:
    """Fetch a version's files, each verified against its sha256.

    A retracted version warns (:class:`RetractedModelWarning`) or, with ``strict``, is
    refused; so is one whose latest verification failed (:class:`FailedVerificationWarning`).
    ``strict`` also refuses a version never verified. With ``dest`` the files and a
    ``model.json`` manifest are written there.
    """
    with reg.connect() as s:
        model, mv = model_version(s, ref)
        info = model_version_dict(s, model, mv)
    if mv.status == "retracted":
        msg = (f"model version {info['ref']} is RETRACTED: {mv.status_reason or 'no reason'}")
        if strict:
            raise Conflict(msg + " (refused: strict)")
        warnings.warn(msg, RetractedModelWarning, stacklevel=2)
    check_verification(info, strict)
    blobs = {f["name"]: reg.artifacts.get(f["sha256"], f["uri"]) for f in info["files"]}
    for f in info["files"]:
        if f["role"] == "weights":
            check_safetensors(blobs[f["name"]], f"{info['ref']} {f['name']}")
    pulled = PulledModel(model.name, mv.version, info, blobs)
    if dest is not None:
        pulled.path = write_pulled(pulled, Path(dest))
    return pulled


def check_verification(info: dict, strict: bool) -> None:
    """Refuse (``strict``) or warn about a version that failed verification; ``strict`` also
    refuses one that has none, or whose record is for other content."""
    record = (info.get("metrics") or {}).get(VERIFICATION)
    ref = info["ref"]
    if not isinstance(record, dict):
        if strict:
            raise Conflict(f"model {ref} has not been verified (run `nnp models verify "
                           f"{ref}`); refused: strict")
        return
    if record.get("content_hash") != info["content_hash"]:
        if strict:
            raise Conflict(f"model {ref}'s verification is for other files (content "
                           f"{str(record.get('content_hash'))[:12]}); run `nnp models verify "
                           f"{ref}`; refused: strict")
        return
    if not record.get("passed"):
        msg = f"model {ref} failed verification: {verification_failures(record)}"
        if strict:
            raise Conflict(msg + "; refused: strict")
        warnings.warn(msg, FailedVerificationWarning, stacklevel=3)


def write_pulled(pulled: PulledModel, dest: Path) -> Path:
    """Write the files and a ``model.json`` manifest into ``dest``, each file atomically."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = {**pulled.info, "format": "nnp-model", "format_version": 1}
    items = [*pulled.blobs.items(),
             (MANIFEST, json.dumps(manifest, indent=2, default=json_default).encode())]
    for name, data in items:
        tmp = dest / f".{name}.{uuid.uuid4().hex}.part"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dest / name)
        finally:
            tmp.unlink(missing_ok=True)
    return dest
