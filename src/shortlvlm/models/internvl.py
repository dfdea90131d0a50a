"""InternVL (transformers-native InternVL3 layout): InternViT, pixel shuffle, Qwen2 decoder."""

from shortlvlm.models.base import ArchitectureSpec

INTERNVL = ArchitectureSpec(
    name="InternVL",
    model_classes=("InternVLForConditionalGeneration",),
    layers_path="model.language_model.layers",
    layer_prefix_fields=("max_window_layers",),
    notes="Qwen2 decoder: layer_types and max_window_layers are rewritten after a cut.",
)

SPECS = (INTERNVL,)
