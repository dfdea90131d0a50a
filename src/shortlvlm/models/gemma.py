"""Gemma 3 and PaliGemma: SigLIP tower and a Gemma decoder."""

from shortlvlm.models.base import ArchitectureSpec

GEMMA3 = ArchitectureSpec(
    name="Gemma 3",
    model_classes=("Gemma3ForConditionalGeneration",),
    layers_path="model.language_model.layers",
    writer_post_norms={
        "self_attn.o_proj": "post_attention_layernorm",
        "mlp.down_proj": "post_feedforward_layernorm",
    },
    modality_inputs=("token_type_ids",),
    notes="Sliding/full attention is chosen per position from layer_types, so a stale list is "
    "silently wrong; it is rewritten after a cut. Writers are followed by sandwich norms.",
)

PALIGEMMA = ArchitectureSpec(
    name="PaliGemma",
    model_classes=("PaliGemmaForConditionalGeneration",),
    layers_path="model.language_model.layers",
    modality_inputs=("token_type_ids",),
    notes="Prefix-LM attention: token_type_ids marks prefix (0) vs. suffix (1), not images; "
    "image positions come from image_token_id.",
)

SPECS = (GEMMA3, PALIGEMMA)
