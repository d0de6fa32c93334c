"""Where training and inference run: ``auto`` picks CUDA when torch sees a GPU."""

from __future__ import annotations

from registry.errors import BadInput

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is
    refused."""
    if device not in DEVICES:
        raise BadInput(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise BadInput("--device cuda: torch sees no CUDA GPU on this machine "
                       f"(torch {torch.__version__}); use --device cpu or auto")
    return "cpu"
