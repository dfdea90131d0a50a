"""Remove decoder layers so that the result is a standard, self-consistent checkpoint."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from shortlvlm.errors import InvalidLayerSelectionError, UnsafeCutError, UnsupportedModelError
from shortlvlm.models import Adapter, get_adapter


def validate_layer_selection(indices: Iterable[int], adapter: Adapter) -> list[int]:
    """Sorted layer indices, or a clear error if they cannot be removed from this model."""
    indices = list(indices)
    num_layers = adapter.num_layers
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidLayerSelectionError(f"layer index {index!r} is not an integer")
        if not 0 <= index < num_layers:
            raise InvalidLayerSelectionError(
                f"layer index {index} is out of range: the model has {num_layers} decoder layers "
                f"(valid indices 0..{num_layers - 1})"
            )
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise InvalidLayerSelectionError(f"layer indices listed more than once: {duplicates}")
    if not indices:
        raise InvalidLayerSelectionError("no layers to remove were given")
    if len(indices) >= num_layers:
        raise InvalidLayerSelectionError(
            f"cannot remove all {num_layers} decoder layers; keep at least one"
        )
    protected = adapter.protected_layers()
    refused = sorted(set(indices) & set(protected))
    if refused:
        raise UnsafeCutError(
            f"refusing to remove layer(s) {refused}: layer {refused[0]} {protected[refused[0]]}"
        )
    return sorted(indices)


def _check_config_consistency(adapter: Adapter) -> None:
    """Refuse to cut a model whose config already disagrees with its modules."""
    num_layers = adapter.num_layers
    for config in adapter.text_configs():
        declared = getattr(config, "num_hidden_layers", None)
        if declared is not None and declared != num_layers:
            raise UnsupportedModelError(
                f"config says num_hidden_layers={declared} but '{adapter.layers_path}' holds "
                f"{num_layers} layers; is --layers-path pointing at the language model?"
            )
        for field_name in adapter.per_layer_fields(config):
            if len(getattr(config, field_name)) != num_layers:
                raise UnsupportedModelError(
                    f"config field {field_name} has {len(getattr(config, field_name))} entries for "
                    f"{num_layers} layers; the checkpoint is inconsistent before any cut"
                )


def _renumber_layer_indices(kept_layers: list[nn.Module], old_to_new: dict[int, int]) -> None:
    """Point every `layer_idx` attribute at the layer's new position (KV-cache slots follow it).

    All links are checked before any is changed, so a refused cut leaves the model untouched.
    """
    updates = []
    for layer in kept_layers:
        for module in layer.modules():
            old = getattr(module, "layer_idx", None)
            if isinstance(old, bool) or not isinstance(old, int):
                continue
            if old not in old_to_new:
                raise UnsafeCutError(
                    f"{type(module).__name__} refers to layer {old}, which is being removed "
                    f"(shared KV cache or a similar cross-layer link); keep layer {old}"
                )
            updates.append((module, old_to_new[old]))
    for module, new in updates:
        module.layer_idx = new


def _sync_config(config, adapter: Adapter, kept: list[int]) -> None:
    """Rewrite the layer count and every per-layer list so a reload builds the same model."""
    for field_name in adapter.per_layer_fields(config):
        values = getattr(config, field_name)
        setattr(config, field_name, type(values)(values[i] for i in kept))
    for field_name in adapter.spec.layer_prefix_fields:
        prefix = getattr(config, field_name, None)
        if isinstance(prefix, int):
            setattr(config, field_name, sum(1 for i in kept if i < prefix))
    config.num_hidden_layers = len(kept)


def drop_layers(model: nn.Module, indices: Iterable[int], adapter: Adapter | None = None) -> nn.Module:
    """Remove the decoder layers at `indices` (original numbering) in place and return the model.

    Renumbers every `layer_idx`, shortens every per-layer config list and sets num_hidden_layers,
    so that the model (and any checkpoint saved from it) runs exactly the kept layers.
    """
    adapter = adapter or get_adapter(model)
    removed = validate_layer_selection(indices, adapter)
    _check_config_consistency(adapter)
    kept = [i for i in range(adapter.num_layers) if i not in set(removed)]
    old_layers = adapter.layers
    kept_layers = [old_layers[i] for i in kept]
    _renumber_layer_indices(kept_layers, {old: new for new, old in enumerate(kept)})
    parent_path, _, attr = adapter.layers_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.ModuleList(kept_layers))
    for config in adapter.text_configs():
        _sync_config(config, adapter, kept)
    return model
