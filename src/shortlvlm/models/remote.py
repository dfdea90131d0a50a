"""Remote-code models the Short-LVLM paper evaluates (loaded with trust_remote_code=True).

Their classes are not in transformers, so they are matched by class name only; the tests run the
method on tiny mimics whose attention, layers and image handling follow the published code
(`tests/models/remote_mimics.py` names the upstream files and lines).
"""

import torch

from shortlvlm.errors import UnsupportedModelError
from shortlvlm.models.base import ArchitectureSpec
from shortlvlm.models.remote_chat import MPLUG_IMAGE_PLACEHOLDER, MplugOwl2Encoding, QwenVLChatEncoding


def qwen_vl_chat_image_mask(config, input_ids: torch.Tensor) -> torch.Tensor:
    """Qwen-VL-Chat places image features strictly between <img> (image_start_id) and </img> (+1)."""
    start_id = config.visual["image_start_id"]
    opened = (input_ids == start_id).long().cumsum(-1)
    closed = (input_ids == start_id + 1).long().cumsum(-1)
    inside = (opened - closed) > 0
    return inside & (input_ids != start_id)


def mplug_owl2_image_mask(config, input_ids: torch.Tensor) -> torch.Tensor:
    """The -200 placeholder each image is written as before forward expands it."""
    return input_ids == MPLUG_IMAGE_PLACEHOLDER


def mplug_owl2_layer_positions(config, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T + n - 1]: forward replaces each row's -200 placeholder by the abstractor's n query features
    (`prepare_inputs_labels_for_multimodal`), so n layer positions come from the placeholder's position."""
    try:
        count = int(config.visual_config["visual_abstractor"]["num_learnable_queries"])
    except (AttributeError, KeyError, TypeError) as err:
        raise UnsupportedModelError(
            "mPLUG-Owl2's config has no visual_config['visual_abstractor']['num_learnable_queries'], so the "
            "image tokens' positions in the decoder layers cannot be placed"
        ) from err
    placeholders = input_ids == MPLUG_IMAGE_PLACEHOLDER
    if not (placeholders.sum(1) == 1).all():
        raise UnsupportedModelError(
            "mPLUG-Owl2 calibration rows need exactly one image each (one <|image|> placeholder): its forward "
            "pads rows with other image counts in a way the token masks cannot follow"
        )
    at = placeholders.long().argmax(1, keepdim=True)
    positions = torch.arange(input_ids.shape[1] + count - 1, device=input_ids.device).expand(len(input_ids), -1)
    # before the placeholder: itself; the n image slots: the placeholder; after: shifted back by n - 1
    return torch.where(positions < at, positions, torch.clamp(positions - (count - 1), min=at))


MIMIC_TESTED = ("Tested on a tiny mimic of the published code (tests/models, tests/cli/test_remote_prune.py), "
                "not on the real checkpoint.")

QWEN_VL_CHAT = ArchitectureSpec(
    name="Qwen-VL-Chat",
    model_classes=("QWenLMHeadModel",),
    layers_path="transformer.h",
    residual_writers=("attn.c_proj", "mlp.c_proj"),
    image_token_attrs=(),
    image_mask=qwen_vl_chat_image_mask,
    # QWenAttention returns (output, present) and appends the probabilities only when asked (upstream
    # modeling_qwen.py QWenAttention.forward); its blocks return tuples.
    attention_probs_index=2,
    attention_call_kwargs={"output_attentions": True},
    layer_returns_tuple=True,
    chat_encoding=QwenVLChatEncoding(),
    remote_code=True,
    notes="GPT-style blocks (transformer.h, attn.c_proj, mlp.c_proj); image spans between <img> and </img>; "
    "attention always eager, probabilities at index 2 of QWenAttention's output when output_attentions. "
    "Runs score and prune (--layers; --ratio with SCP and the scorers, --layerwise), calibration written as its "
    "chat() does (ChatML, the image as its file path, QWenTokenizer); compare, eval and bench are refused "
    "(no processor to answer prompts with). " + MIMIC_TESTED,
)

MPLUG_OWL2 = ArchitectureSpec(
    name="mPLUG-Owl2",
    model_classes=("MPLUGOwl2LlamaForCausalLM",),
    layers_path="model.layers",
    image_token_attrs=(),
    image_mask=mplug_owl2_image_mask,
    layer_positions=mplug_owl2_layer_positions,
    attention_probs_index=1,
    attention_call_kwargs={"output_attentions": True},
    layer_returns_tuple=True,
    chat_encoding=MplugOwl2Encoding(),
    remote_code=True,
    notes="Modality-adaptive Llama layers (modality-split norms and k/v); each -200 placeholder expands "
    "into num_learnable_queries image tokens inside forward, so token masks are mapped onto the "
    "expanded sequence the layers see. Runs score and prune (--layers; --ratio with SCP and the scorers, "
    "--layerwise), calibration written as its mplug_owl2 conversation (tokenizer_image_token, "
    "CLIPImageProcessor); compare, eval and bench are refused (no processor to answer prompts with). "
    + MIMIC_TESTED,
)

SPECS = (QWEN_VL_CHAT, MPLUG_OWL2)
