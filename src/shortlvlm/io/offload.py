"""Models dispatched by accelerate (`device_map`, CPU/disk offload): where an offloaded weight really lives.

With offload, a module's parameters sit on the meta device and accelerate's AlignDevicesHook loads
them from its `weights_map` for each forward pass. Weight edits (SCP) must therefore change the
value in that map, not the meta placeholder. The edited tensor is put in the loader's in-memory
state dict, which takes priority over the CPU copy or the file on disk; the offload folder (and any
checkpoint it points at) is never written to.
"""

from __future__ import annotations

import math

import torch
from safetensors import safe_open
from torch import nn


def _hooks(module: nn.Module) -> list:
    """The accelerate hooks attached to a module (a SequentialHook unpacked), possibly none."""
    hook = getattr(module, "_hf_hook", None)
    return list(getattr(hook, "hooks", None) or ([hook] if hook is not None else []))


def offload_hook(module: nn.Module):
    """The accelerate hook that offloads this module's own weights, or None."""
    for candidate in _hooks(module):
        if getattr(candidate, "offload", False) and getattr(candidate, "weights_map", None) is not None:
            return candidate
    return None


def is_offloaded(module: nn.Module) -> bool:
    """Whether the module's weights are held by accelerate outside the module (CPU or disk offload)."""
    return offload_hook(module) is not None


def read_weight(module: nn.Module, name: str) -> torch.Tensor:
    """The real value of `module.<name>`: the parameter itself, or for an offloaded module its value in
    accelerate's weight map (on the CPU)."""
    hook = offload_hook(module)
    if hook is None:
        return getattr(module, name).detach()
    return hook.weights_map[name].detach().cpu()


def write_weight(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Set `module.<name>` to `value` (same shape; cast to the stored dtype), offloaded or not."""
    hook = offload_hook(module)
    if hook is None:
        with torch.no_grad():
            getattr(module, name).copy_(value)
        return
    weights_map = hook.weights_map
    loader, key = weights_map.dataset, f"{weights_map.prefix}{name}"
    stored = loader[key]
    if stored.shape != value.shape:
        raise ValueError(f"offloaded weight {key} has shape {tuple(stored.shape)}, not {tuple(value.shape)}")
    loader.state_dict[key] = value.detach().to(device="cpu", dtype=stored.dtype).contiguous()


def input_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: the execution device accelerate gives the input embeddings, else
    the first parameter that is not a meta placeholder, else the CPU."""
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # remote-code models may not implement it
        embeddings = None
    for candidate in _hooks(embeddings) if embeddings is not None else []:
        device = getattr(candidate, "execution_device", None)
        if device is not None:
            return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return torch.device("cpu")


def has_offloaded_weights(model: nn.Module) -> bool:
    """Whether any module of the model keeps its weights outside itself (accelerate offload)."""
    return any(is_offloaded(module) for module in model.modules())


def read_weight_ends(module: nn.Module, name: str, count: int) -> torch.Tensor | None:
    """The first and last `count` elements of `module.<name>` flattened (all of them if it has no more than
    2 x count), on the CPU; an offloaded weight kept in a safetensors file is read only there. None for a
    meta placeholder whose value nothing holds (a skeleton)."""
    weights_map = getattr(offload_hook(module), "weights_map", None)
    loader = getattr(weights_map, "dataset", None)  # accelerate's OffloadedWeightsLoader
    if loader is not None:
        key = f"{weights_map.prefix}{name}"
        if key in getattr(loader, "state_dict", {}):  # in memory (an edit by write_weight goes here too)
            return _ends(loader.state_dict[key], count)
        info = getattr(loader, "index", {}).get(key)
        if info is not None and info.get("safetensors_file"):
            return _safetensors_ends(info["safetensors_file"], info.get("weight_name", key), count)
        if info is not None:
            return _ends(loader[key], count)
    value = getattr(module, name)
    return None if value.device.type == "meta" else _ends(value, count)


def _ends(tensor: torch.Tensor, count: int) -> torch.Tensor:
    flat = tensor.detach().reshape(-1)
    return (flat if flat.numel() <= 2 * count else torch.cat([flat[:count], flat[-count:]])).cpu()


def _safetensors_ends(file: str, name: str, count: int) -> torch.Tensor:
    """_ends of a tensor in a safetensors file, reading only the leading and trailing rows it needs."""
    with safe_open(file, framework="pt", device="cpu") as handle:
        part = handle.get_slice(name)
        shape = part.get_shape()
        if not shape or math.prod(shape) <= 2 * count:
            return handle.get_tensor(name).reshape(-1)
        rows = -(-count // math.prod(shape[1:]))  # leading rows that hold `count` elements
        head, tail = part[:rows].reshape(-1)[:count], part[shape[0] - rows:].reshape(-1)[-count:]
        return torch.cat([head, tail])
