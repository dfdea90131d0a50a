"""Remote-code models the Short-LVLM paper evaluates (loaded with trust_remote_code=True).

Their classes are not in transformers, so they are matched by class name only; tests run them
through hand-built modules with the same layout.
"""

import torch

from shortlvlm.models.base import ArchitectureSpec


def qwen_vl_chat_image_mask(config, input_ids: torch.Tensor) -> torch.Tensor:
    """Qwen-VL-Chat places image features strictly between <img> (image_start_id) and </img> (+1)."""
    start_id = config.visual["image_start_id"]
    opened = (input_ids == start_id).long().cumsum(-1)
    closed = (input_ids == start_id + 1).long().cumsum(-1)
    inside = (opened - closed) > 0
    return inside & (input_ids != start_id)


QWEN_VL_CHAT = ArchitectureSpec(
    name="Qwen-VL-Chat",
    model_classes=("QWenLMHeadModel",),
    layers_path="transformer.h",
    residual_writers=("attn.c_proj", "mlp.c_proj"),
    image_token_attrs=(),
    image_mask=qwen_vl_chat_image_mask,
    remote_code=True,
    notes="GPT-style blocks (transformer.h, attn.c_proj, mlp.c_proj); image spans between "
    "<img> and </img>.",
)

MPLUG_OWL2 = ArchitectureSpec(
    name="mPLUG-Owl2",
    model_classes=("MPLUGOwl2LlamaForCausalLM",),
    layers_path="model.layers",
    image_token_attrs=(),
    remote_code=True,
    notes="Modality-adaptive Llama layers (modality-split norms and k/v); images expand from a "
    "single -200 placeholder inside forward, so image positions come from the "
    "modality_indicators the layers receive, not from input_ids.",
)

SPECS = (QWEN_VL_CHAT, MPLUG_OWL2)
