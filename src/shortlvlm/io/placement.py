"""Placement for layer-by-layer calibration: which modules stay in the checkpoint's files, and the
options a model loaded that way carries to every capture pass over it (shortlvlm.capture.layerwise)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shortlvlm.errors import CaptureError
from shortlvlm.io.offload import offload_hook
from shortlvlm.options import Options, option, options

LAYERWISE_ATTR = "_shortlvlm_layerwise"


def _existing_folder(value) -> str | None:
    return None if value is None or Path(value).is_dir() else "is not an existing folder; create it first"


@options
class Layerwise(Options):
    """Layer-by-layer calibration: one decoder layer in memory at a time, every batch through it."""

    error = CaptureError

    activations_dir: str | None = option(
        None, flag="--activations-dir", check=_existing_folder,
        help="with --layerwise: keep the activations between layers (and each batch's masks and position "
             "embeddings) in files under this folder instead of CPU memory")


def use_layerwise(model: nn.Module, options: Layerwise | None = Layerwise()) -> None:
    """Make every capture pass over `model` run layer by layer (None: back to whole-model passes)."""
    setattr(model, LAYERWISE_ATTR, options)


def layerwise_options(model: nn.Module) -> Layerwise | None:
    """The layer-by-layer options set on `model` (by `load(..., layerwise=True)` or use_layerwise)."""
    return getattr(model, LAYERWISE_ATTR, None)


def layer_device_map(model: nn.Module, list_paths: list[str], device: str | torch.device,
                     on_disk: tuple[str, ...] = ()) -> dict[str, str]:
    """An accelerate device map: each element of the given layer lists, and the modules `on_disk`, on
    "disk" (read from the checkpoint's safetensors when used), every other module on `device`."""
    device = str(device)
    mapping: dict[str, str] = {}
    targets = [*list_paths, *on_disk]

    def walk(module: nn.Module, prefix: str) -> None:
        for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            mapping[f"{prefix}{name}"] = device  # e.g. LLaVA-NeXT's image_newline
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path in list_paths:
                mapping.update({f"{path}.{i}": "disk" for i in range(len(child))})
            elif path in on_disk:
                mapping[path] = "disk"
            elif any(target.startswith(path + ".") for target in targets):
                walk(child, path + ".")
            else:
                mapping[path] = device
    walk(model, "")
    return mapping


def streamed_parts(model: nn.Module, decoder_layers: str) -> tuple[list[str], tuple[str, ...]]:
    """What a layer-by-layer load leaves on disk: every top-level ModuleList of blocks (the decoder
    layers, which the capture pass reads once each, and e.g. the vision encoder's layers, which
    accelerate reads for each prefix pass) and an untied LM head (capture never uses it)."""
    lists = [path for path, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) > 1 and any(p.numel() for p in module.parameters())]
    lists = [path for path in lists if not any(path.startswith(other + ".") for other in lists)]
    if decoder_layers not in lists:
        lists.append(decoder_layers)
    return lists, untied_head(model)


def untied_head(model: nn.Module) -> tuple[str, ...]:
    """The LM head's module path, unless it shares its weight with the input embeddings (then ())."""
    try:
        head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return ()
    if head is None or head.weight is getattr(embeddings, "weight", None):
        return ()
    return tuple(name for name, module in model.named_modules() if module is head)[:1]


def offloaded_layer_lists(model: nn.Module) -> list[str]:
    """Paths of the ModuleLists in `model` whose elements keep weights in accelerate's offload."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
                any(offload_hook(sub) is not None for sub in element.modules()) for element in module):
            found.append(path)
    return found


def default_execution_device() -> torch.device:
    """Where the layer-by-layer pass computes: the first GPU if there is one, else the CPU."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
