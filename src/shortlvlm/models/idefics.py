"""Idefics3 and SmolVLM: SigLIP tower, pixel-shuffle connector, Llama decoder under model.text_model."""

from shortlvlm.models.base import ArchitectureSpec

IDEFICS3 = ArchitectureSpec(
    name="Idefics3",
    model_classes=("Idefics3ForConditionalGeneration",),
    layers_path="model.text_model.layers",
    notes="Image tokens are wrapped in <fake_token_around_image>/<row_x_col_y> markers.",
)

SMOLVLM = ArchitectureSpec(
    name="SmolVLM",
    model_classes=("SmolVLMForConditionalGeneration",),
    layers_path="model.text_model.layers",
    notes="Idefics3 layout.",
)

SPECS = (IDEFICS3, SMOLVLM)
