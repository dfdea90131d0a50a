"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: M-RoPE decoders with modality-typed tokens."""

from shortlvlm.models.base import ArchitectureSpec


def deepstack_layers(config) -> dict[int, str]:
    """Qwen3-VL adds deepstack visual features to the first len(deepstack_visual_indexes) text layers.

    The text model injects `deepstack_visual_embeds[i]` into whichever layer sits at position i of
    the layer list, so removing one of those layers would feed the features to the wrong layer.
    """
    indexes = getattr(getattr(config, "vision_config", None), "deepstack_visual_indexes", None) or ()
    reason = "receives Qwen3-VL deepstack visual features by position; removing it would shift them"
    return {i: reason for i in range(len(indexes))}


_QWEN_COMMON = dict(
    layers_path="model.language_model.layers",
    modality_inputs=("mm_token_type_ids",),
)

QWEN2_VL = ArchitectureSpec(
    name="Qwen2-VL",
    model_classes=("Qwen2VLForConditionalGeneration",),
    layer_prefix_fields=("max_window_layers",),
    notes="layer_types and max_window_layers are rewritten after a cut.",
    **_QWEN_COMMON,
)

QWEN2_5_VL = ArchitectureSpec(
    name="Qwen2.5-VL",
    model_classes=("Qwen2_5_VLForConditionalGeneration",),
    layer_prefix_fields=("max_window_layers",),
    notes="layer_types and max_window_layers are rewritten after a cut.",
    **_QWEN_COMMON,
)

QWEN3_VL = ArchitectureSpec(
    name="Qwen3-VL",
    model_classes=("Qwen3VLForConditionalGeneration",),
    protected_layers=deepstack_layers,
    notes="The first len(deepstack_visual_indexes) text layers receive deepstack features: "
    "removing them is refused.",
    **_QWEN_COMMON,
)

SPECS = (QWEN2_VL, QWEN2_5_VL, QWEN3_VL)
