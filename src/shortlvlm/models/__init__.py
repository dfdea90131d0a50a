"""Architecture adapters: the only place that knows where a model keeps its layers."""

from __future__ import annotations

import dataclasses

from torch import nn

from shortlvlm.errors import UnsupportedModelError
from shortlvlm.models import gemma, idefics, internvl, llava, qwen_vl, remote
from shortlvlm.models.base import Adapter, ArchitectureSpec
from shortlvlm.models.generic import detect_spec

SPECS: tuple[ArchitectureSpec, ...] = (
    llava.SPECS + qwen_vl.SPECS + idefics.SPECS + gemma.SPECS + internvl.SPECS + remote.SPECS
)
REGISTRY: dict[str, ArchitectureSpec] = {cls: spec for spec in SPECS for cls in spec.model_classes}


def _token_id_mask(token_id: int):
    return lambda config, input_ids: input_ids == token_id


def get_adapter(
    model: nn.Module,
    *,
    generic: bool = False,
    layers_path: str | None = None,
    writers: tuple[str, ...] | None = None,
    image_token_id: int | None = None,
) -> Adapter:
    """The adapter for `model`: registered by class name, or detected by structure when asked.

    Overrides (layers_path, writers, image_token_id) replace what the registry or detection says.
    """
    class_name = type(model).__name__
    overridden = layers_path is not None or writers is not None or image_token_id is not None
    spec = REGISTRY.get(class_name)
    if spec is None or generic:
        if spec is None and not (generic or overridden):
            raise UnsupportedModelError(
                f"no adapter for {class_name}; pass --generic to find its decoder layers by structure, "
                "or --layers-path (and --writers) to name them (see `shortlvlm models`)"
            )
        spec = detect_spec(model, layers_path, writers)
    changes = {}
    if layers_path is not None:
        changes["layers_path"] = layers_path
    if writers is not None:
        changes["residual_writers"] = tuple(writers)
    if image_token_id is not None:
        changes["image_mask"] = _token_id_mask(image_token_id)
    if changes:
        spec = dataclasses.replace(spec, **changes)
    return Adapter(spec, model)


__all__ = ["REGISTRY", "SPECS", "Adapter", "ArchitectureSpec", "get_adapter"]
