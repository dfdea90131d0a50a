"""LLaVA-style models: a vision tower and projector in front of a Llama/Mistral decoder."""

from shortlvlm.models.base import ArchitectureSpec

LLAVA = ArchitectureSpec(
    name="LLaVA",
    model_classes=("LlavaForConditionalGeneration",),
    layers_path="model.language_model.layers",
    notes="LLaVA-1.5 and derivatives; one <image> placeholder token per image feature.",
)

LLAVA_NEXT = ArchitectureSpec(
    name="LLaVA-NeXT",
    model_classes=("LlavaNextForConditionalGeneration",),
    layers_path="model.language_model.layers",
    notes="AnyRes tiling changes only the vision side; decoder surgery is LLaVA's.",
)

MISTRAL3 = ArchitectureSpec(
    name="Mistral 3",
    model_classes=("Mistral3ForConditionalGeneration",),
    layers_path="model.language_model.layers",
    notes="Pixtral vision tower with patch merger; Mistral decoder.",
)

SPECS = (LLAVA, LLAVA_NEXT, MISTRAL3)
