"""The TorchScript export stored with each model version: it runs with plain torch.

:func:`export_record` scripts the version's energy model (:func:`.potential.potential`: the
ensemble, its self energies and the level's reference energies, eV out; what the ASE
calculator runs) with
``torch.jit.script`` and saves it with a ``nnp.json`` description inside the archive
(``torch.jit.load(path, _extra_files={"nnp.json": ""})`` reads it back). Registration stores
the file as ``model.torchscript.pt`` and a record under ``metrics["torchscript"]``: the file
name, sizes and versions, or — for an architecture that cannot be exported — ``available:
false`` and the reason, so that the version still registers and ``nnp models show`` says why.
How to use the file: docs/models.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings

FILE = "model.torchscript.pt"
RECORD = "torchscript"
INPUTS = {
    "species": "(batch, atoms) int64 atomic numbers; -1 pads shorter molecules",
    "coordinates": "(batch, atoms, 3) Å, float32 (the weights' dtype; .double() for float64)",
    "cell": "(3, 3) Å, rows are the lattice vectors, or None",
    "pbc": "(3,) bool, or None; periodic input is one system (batch 1)",
}
OUTPUTS = {
    "forward": "(batch,) float64 total energy in eV: ensemble mean, self energies and the "
               "level's atomic reference energies included",
    "member_energies": "(members, batch) float64 energies in eV, one row per member",
}


def describe(config: dict) -> dict:
    """The ``nnp.json`` stored inside the archive."""
    import torch

    return {"format": "nnp-torchscript", "format_version": 1, "arch": config.get("arch"),
            "elements": config.get("elements"), "cutoff_a": config.get("radial_cutoff"),
            "units": {"energy": "eV", "length": "Å"}, "inputs": INPUTS, "outputs": OUTPUTS,
            "members": config.get("ensemble"), "levels": config.get("levels"),
            "target": config.get("target"), "delta": bool(config.get("delta")),
            "base_level": config.get("base_level"), "dataset": config.get("dataset"),
            "dataset_hash": config.get("dataset_hash"), "torch_version": torch.__version__,
            "torchani_version": config.get("torchani_version")}


def script(config: dict, members: list[dict]):
    """The scripted energy model of ``config`` and its members' state dicts; an
    architecture whose modules do not compile raises :class:`BadInput` with the reason."""
    import torch

    from registry.errors import BadInput

    from .potential import potential

    try:
        model = potential(config, members).eval()
    except Exception as exc:  # noqa: BLE001 (a config or weights that do not build)
        raise BadInput(f"the stored config and weights do not build a model: "
                       f"{_first_line(exc)}") from None
    try:
        with _quiet_jit():
            return torch.jit.script(model)
    except Exception as exc:  # noqa: BLE001 (TorchScript raises many kinds)
        raise BadInput(f"no TorchScript export for architecture {config.get('arch')!r}: "
                       f"torch.jit.script cannot compile its modules "
                       f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The error's first line, and where TorchScript stopped (``pkg/module.py, line N``)."""
    import re

    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    where = re.search(r'File "(?:.*site-packages/)?([^"]+)", line (\d+)', str(exc))
    text = lines[0].rstrip(":")
    return f"{type(exc).__name__}: {text}" + (f", in {where[1]} line {where[2]}" if where else "")


def export_bytes(config: dict, members: list[dict]) -> bytes:
    """The TorchScript archive (``torch.jit.save``) with ``nnp.json`` inside."""
    import torch

    buf = io.BytesIO()
    scripted = script(config, members)
    with _quiet_jit():
        torch.jit.save(scripted, buf,
                       _extra_files={"nnp.json": json.dumps(describe(config), indent=1)})
    return buf.getvalue()


@contextlib.contextmanager
def _quiet_jit():
    """torch 2.13 marks ``torch.jit.script``/``save``/``load`` deprecated (pointing at
    ``torch.export``) but runs them; the warning says nothing a user of ``nnp`` can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated",
                                category=DeprecationWarning)
        yield


def export_record(config: dict, weights: list[bytes]) -> tuple[dict[str, bytes], dict]:
    """``({FILE: bytes}, record)`` for registration, from the members' safetensors; an
    export that cannot be made gives ``({}, {"available": False, "reason": ...})`` rather
    than an error, so the version still registers."""
    import torch

    from registry.errors import BadInput

    from .torch_io import safetensors_to_state_dict

    try:
        blob = export_bytes(config, [safetensors_to_state_dict(w) for w in weights])
    except BadInput as exc:  # recorded, not raised: the version still registers
        return {}, {"available": False, "reason": str(exc)}
    delta = (f"; predicts the Δ correction {config.get('target')}: add the base level "
             f"{config.get('base_level')}'s energy") if config.get("delta") else ""
    return {FILE: blob}, {"available": True, "file": FILE, "size": len(blob),
                          "torch_version": torch.__version__,
                          "output": "energy eV (ensemble mean, reference energies "
                                    "included)" + delta}


def version_export(reg, ref: str, *, strict: bool = False) -> tuple[bytes, dict]:
    """``(archive bytes, info)`` of version ``ref``: the stored file, hash-verified by the
    pull; for a version registered without one and without a recorded reason (registered by
    hand, or before exports were stored), built from its config and weights. A version whose
    record says the export is not available is refused with that reason."""
    from registry.errors import BadInput

    from .torch_io import load_state_dicts

    pulled = reg.pull_model(ref, strict=strict)
    record = (pulled.info.get("metrics") or {}).get(RECORD) or {}
    info = {"ref": pulled.ref, "architecture": pulled.info["architecture"]}
    if FILE in pulled.extras:
        blob = pulled.extras[FILE]
        return blob, {**info, "source": "stored", "size": len(blob)}
    if record.get("available") is False:
        raise BadInput(f"model {pulled.ref} has no TorchScript export: "
                       f"{record.get('reason') or 'no reason recorded'}")
    if not pulled.config:
        raise BadInput(f"model {pulled.ref} has no stored config to build a TorchScript "
                       f"export from")
    blob = export_bytes(pulled.config, load_state_dicts(pulled))
    return blob, {**info, "source": "built from the weights", "size": len(blob)}
