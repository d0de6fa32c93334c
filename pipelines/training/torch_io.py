"""Torch state dicts <-> safetensors for the model registry (which never imports torch).

``state_dict_to_safetensors(module.state_dict())`` gives bytes for
``Registry.register_model(weights=...)``; ``load_state_dicts(registry.pull_model(ref))`` gives
one torch state dict per ensemble member. No pickle is involved either way.
"""

from __future__ import annotations


def state_dict_to_safetensors(state_dict, metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes of a torch state dict (tensors made contiguous, on CPU, detached)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata=metadata)


def safetensors_to_state_dict(data: bytes, device: str = "cpu") -> dict:
    """A torch state dict from safetensors bytes."""
    from safetensors.torch import load

    sd = load(data)
    return sd if device == "cpu" else {k: v.to(device) for k, v in sd.items()}


def load_state_dicts(pulled, device: str = "cpu") -> list[dict]:
    """One torch state dict per member of a :class:`registry.models_api.PulledModel`."""
    return [safetensors_to_state_dict(pulled.blobs[name], device)
            for name in pulled.weight_files()]


def register_torch_model(registry, name: str, modules, **kwargs) -> dict:
    """Register ``torch.nn.Module`` (or a list of them: an ensemble) as the next version."""
    if not isinstance(modules, list | tuple):
        modules = [modules]
    return registry.register_model(
        name, [state_dict_to_safetensors(m.state_dict()) for m in modules], **kwargs)
