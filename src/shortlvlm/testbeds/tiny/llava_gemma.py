"""Tiny LLaVA, LLaVA-NeXT, Mistral 3, PaliGemma, Gemma 3 and InternVL configs and input batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PretrainedConfig
from transformers.models.gemma3.configuration_gemma3 import Gemma3Config
from transformers.models.internvl.configuration_internvl import InternVLConfig
from transformers.models.llava.configuration_llava import LlavaConfig
from transformers.models.llava_next.configuration_llava_next import LlavaNextConfig
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)
from transformers.models.mistral3.configuration_mistral3 import Mistral3Config
from transformers.models.paligemma.configuration_paligemma import PaliGemmaConfig

from shortlvlm.testbeds.tiny.common import (
    TEXT_HEAD_DIM,
    TEXT_HIDDEN,
    VIS_HEADS,
    VIS_HIDDEN,
    VOCAB,
    build_ids,
    pad_id,
    rand_pixels,
    text_kwargs,
    vision_kwargs,
)

# --------------------------------------------------------------------------------------
# LLaVA (CLIP vision + Llama text)
# --------------------------------------------------------------------------------------
LLAVA_IMAGE_TOKEN = 500


def llava_config(num_layers: int = 4) -> PretrainedConfig:
    """LLaVA-1.5 style: CLIP (16px, patch 4 -> 16 patches + CLS) + Llama."""
    return LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **vision_kwargs(16, 4, projection_dim=32)),
        text_config=dict(
            model_type="llama", **text_kwargs(num_layers, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        ),
        image_token_index=LLAVA_IMAGE_TOKEN,
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",  # drops CLS
        dtype="float32",
    )


def llava_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """``<s> USER: <image>*N \\n question ASSISTANT:`` with N = (img/patch)^2 (CLS dropped)."""
    gen = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    n_img = (vc.image_size // vc.patch_size) ** 2  # LlavaProcessor: +1 CLS, -1 for "default" strategy
    if config.vision_feature_select_strategy == "full":
        n_img += 1
    bos = config.text_config.bos_token_id
    layout = [[bos], 5, [config.image_token_id] * n_img, 8]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), gen)
    pixel_values = rand_pixels((batch_size, 3, vc.image_size, vc.image_size), gen)
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)


# --------------------------------------------------------------------------------------
# LLaVA-NeXT (CLIP vision with anyres tiling + Llama text)
# --------------------------------------------------------------------------------------
LLAVA_NEXT_IMAGE_TOKEN = 500
LLAVA_NEXT_ORIG_SIZE = (16, 32)  # (H, W) of the "original" image -> picks the 16x32 pinpoint


def llava_next_config(num_layers: int = 4) -> PretrainedConfig:
    """LLaVA-NeXT: CLIP tile 16px / patch 8 (2x2 patches per tile), pinpoints 16x32 and 32x16."""
    return LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", **vision_kwargs(16, 8, projection_dim=32)),
        text_config=dict(
            model_type="llama", **text_kwargs(num_layers, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        ),
        image_token_index=LLAVA_NEXT_IMAGE_TOKEN,
        image_grid_pinpoints=[[16, 32], [32, 16]],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        dtype="float32",
    )


def llava_next_num_image_tokens(config: PretrainedConfig, image_size_hw: Sequence[int]) -> int:
    """Number of image features for one image, mirroring ``LlavaNextModel.pack_image_features``.

    Uses the library's own ``get_anyres_image_grid_shape`` and ``unpad_image`` on a
    dummy feature map: base tile (h*w) + unpadded grid (rows * (cols + 1 newline)).
    """
    vc = config.vision_config
    side = vc.image_size // vc.patch_size  # patches per tile side
    if config.vision_feature_select_strategy == "full":
        raise NotImplementedError("only the 'default' strategy (CLS dropped) is modelled here")
    n_tiles = image_size_to_num_patches(list(image_size_hw), config.image_grid_pinpoints, vc.image_size)
    if n_tiles == 1:  # only the base tile (+ one newline)
        return side * side + 1
    grid_h, grid_w = get_anyres_image_grid_shape(list(image_size_hw), config.image_grid_pinpoints, vc.image_size)
    dummy = torch.zeros(1, grid_h * side, grid_w * side)
    unpadded = unpad_image(dummy, list(image_size_hw))
    rows, cols = unpadded.shape[1:]
    return side * side + rows * (cols + 1)


def llava_next_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Same prompt shape as LLaVA; pixel_values is (B, n_tiles, 3, tile, tile) + image_sizes (B, 2)."""
    gen = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    n_img = llava_next_num_image_tokens(config, LLAVA_NEXT_ORIG_SIZE)
    n_tiles = image_size_to_num_patches(list(LLAVA_NEXT_ORIG_SIZE), config.image_grid_pinpoints, vc.image_size)
    bos = config.text_config.bos_token_id
    layout = [[bos], 5, [config.image_token_id] * n_img, 8]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), gen)
    pixel_values = rand_pixels((batch_size, n_tiles, 3, vc.image_size, vc.image_size), gen)
    image_sizes = torch.tensor([list(LLAVA_NEXT_ORIG_SIZE)] * batch_size, dtype=torch.long)
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, image_sizes=image_sizes
    )


# --------------------------------------------------------------------------------------
# Mistral3 (Pixtral vision + patch merger + Mistral text)
# --------------------------------------------------------------------------------------
# Tekken-like ids: <s>=1 </s>=2 [INST]=3 [/INST]=4 [IMG]=10 <pad>=11 [IMG_BREAK]=12 [IMG_END]=13
MISTRAL3_IMG, MISTRAL3_PAD, MISTRAL3_BREAK, MISTRAL3_END = 10, 11, 12, 13
MISTRAL3_INST, MISTRAL3_INST_END = 3, 4
MISTRAL3_IMAGE_HW = (24, 32)  # non-square, multiple of patch_size * spatial_merge_size = 8


def mistral3_config(num_layers: int = 4) -> PretrainedConfig:
    """Mistral3: Pixtral (max 32px, patch 4), spatial_merge_size 2, Mistral text (no sliding window)."""
    return Mistral3Config(
        vision_config=dict(model_type="pixtral", **vision_kwargs(32, 4, head_dim=VIS_HIDDEN // VIS_HEADS)),
        text_config=dict(
            model_type="mistral",
            **text_kwargs(
                num_layers, pad_token_id=MISTRAL3_PAD, bos_token_id=1, eos_token_id=2, sliding_window=None
            ),
        ),
        image_token_index=MISTRAL3_IMG,
        spatial_merge_size=2,
        vision_feature_layer=-1,
        dtype="float32",
    )


def mistral3_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """``<s>[INST] text [IMG]*w [IMG_BREAK] ... [IMG]*w [IMG_END] text [/INST]`` (PixtralProcessor layout).

    Only ``[IMG]`` (``image_token_id``) positions receive features; h*w of them with
    h, w = image_size // (patch_size * spatial_merge_size).
    """
    gen = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    step = vc.patch_size * config.spatial_merge_size
    h, w = MISTRAL3_IMAGE_HW[0] // step, MISTRAL3_IMAGE_HW[1] // step
    block: list[int] = []
    for _ in range(h):
        block += [config.image_token_id] * w + [MISTRAL3_BREAK]
    block[-1] = MISTRAL3_END
    bos = config.text_config.bos_token_id
    layout = [[bos, MISTRAL3_INST], 5, block, 6, [MISTRAL3_INST_END]]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), gen)
    pixel_values = rand_pixels((batch_size, 3, *MISTRAL3_IMAGE_HW), gen)
    image_sizes = torch.tensor([list(MISTRAL3_IMAGE_HW)] * batch_size, dtype=torch.long)
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, image_sizes=image_sizes
    )


# --------------------------------------------------------------------------------------
# PaliGemma (SigLIP vision + Gemma text, bidirectional prefix)
# --------------------------------------------------------------------------------------
PALIGEMMA_IMAGE_TOKEN = 500
GEMMA_NEWLINE = 108  # "\n" in the Gemma tokenizer; only cosmetic here


def paligemma_config(num_layers: int = 4) -> PretrainedConfig:
    """PaliGemma-1: SigLIP 16px / patch 4 -> 16 image tokens; Gemma text (pad 0, eos 1, bos 2)."""
    return PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", **vision_kwargs(16, 4, vision_use_head=False)),
        text_config=dict(
            model_type="gemma", **text_kwargs(num_layers, pad_token_id=0, eos_token_id=1, bos_token_id=2)
        ),
        image_token_index=PALIGEMMA_IMAGE_TOKEN,
        projection_dim=TEXT_HIDDEN,  # must equal text hidden size
        hidden_size=TEXT_HIDDEN,
        vocab_size=VOCAB,
        dtype="float32",
    )


def paligemma_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """``<image>*N <bos> prompt \\n`` with N = text_config.num_image_tokens = (img/patch)^2.

    ``token_type_ids`` follows PaliGemmaProcessor: 0 for the whole prefix (image +
    prompt, attended bidirectionally), 1 only for a training suffix, i.e. all zeros
    here. NOTE: it is a prefix/suffix marker, NOT an image-token marker.
    """
    gen = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    n_img = config.text_config.num_image_tokens  # set by PaliGemmaConfig.__post_init__
    bos = config.text_config.bos_token_id
    # The prefix is image-first, so the left padding goes before the image block;
    # the shortened random segment is the prompt after <bos>.
    layout = [[config.image_token_id] * n_img, [bos], 10, [GEMMA_NEWLINE]]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), gen)
    pixel_values = rand_pixels((batch_size, 3, vc.image_size, vc.image_size), gen)
    token_type_ids = torch.zeros_like(input_ids)
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, token_type_ids=token_type_ids
    )


# --------------------------------------------------------------------------------------
# Gemma3 (SigLIP vision + avg-pool projector + Gemma3 text with sliding/full mix)
# --------------------------------------------------------------------------------------
GEMMA3_BOI, GEMMA3_EOI, GEMMA3_IMAGE_TOKEN = 497, 498, 499
GEMMA3_NEWLINE2 = 108  # "\n\n" in the Gemma tokenizer


def gemma3_config(num_layers: int = 4, sliding_window_pattern: int = 3) -> PretrainedConfig:
    """Gemma3: SigLIP 32px / patch 4 (8x8 patches) avg-pooled to mm_tokens_per_image=16.

    Text: ``sliding_window=8`` and ``sliding_window_pattern=3`` -> layer_types
    ``[S, S, F, S, S, F]`` for 6 layers (``[S, S, F, S]`` for 4), so the sliding
    window (8) is shorter than the prompt (~30 tokens) and matters numerically.
    """
    return Gemma3Config(
        vision_config=dict(model_type="siglip_vision_model", **vision_kwargs(32, 4, vision_use_head=False)),
        text_config=dict(
            model_type="gemma3_text",
            **text_kwargs(
                num_layers,
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
                query_pre_attn_scalar=TEXT_HEAD_DIM,
                sliding_window=8,
                sliding_window_pattern=sliding_window_pattern,
            ),
        ),
        mm_tokens_per_image=16,
        boi_token_index=GEMMA3_BOI,
        eoi_token_index=GEMMA3_EOI,
        image_token_index=GEMMA3_IMAGE_TOKEN,
        dtype="float32",
    )


def gemma3_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """``<bos> text \\n\\n <boi> <img>*mm_tokens_per_image <eoi> \\n\\n text`` (Gemma3Processor layout).

    ``token_type_ids`` = 1 exactly on image-token positions (not boi/eoi), else 0;
    the model uses it to make each image block attend bidirectionally.
    """
    gen = torch.Generator().manual_seed(seed)
    n_img = config.mm_tokens_per_image
    bos = config.text_config.bos_token_id
    block = (
        [GEMMA3_NEWLINE2, config.boi_token_id]
        + [config.image_token_id] * n_img
        + [config.eoi_token_id, GEMMA3_NEWLINE2]
    )
    layout = [[bos], 5, block, 7]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), gen)
    vc = config.vision_config
    pixel_values = rand_pixels((batch_size, 3, vc.image_size, vc.image_size), gen)
    token_type_ids = (input_ids == config.image_token_id).long()
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, token_type_ids=token_type_ids
    )


# --------------------------------------------------------------------------------------
# InternVL (InternViT + pixel shuffle + Qwen2 text)
# --------------------------------------------------------------------------------------
# Qwen2-like: <|endoftext|> used as pad; <img>, </img>, <IMG_CONTEXT> near the top of the vocab.
INTERNVL_PAD, INTERNVL_EOS = 0, 2
INTERNVL_START_IMG, INTERNVL_END_IMG, INTERNVL_IMAGE_TOKEN = 497, 498, 499


def internvl_config(num_layers: int = 4) -> PretrainedConfig:
    """InternVL3-style: InternViT 32px / patch 4 (8x8 patches), downsample_ratio 0.5 -> 16 tokens; Qwen2 text."""
    return InternVLConfig(
        vision_config=dict(model_type="internvl_vision", **vision_kwargs(32, 4)),
        text_config=dict(
            model_type="qwen2",
            **text_kwargs(num_layers, pad_token_id=INTERNVL_PAD, eos_token_id=INTERNVL_EOS, bos_token_id=None),
        ),
        image_token_id=INTERNVL_IMAGE_TOKEN,
        image_seq_length=16,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        dtype="float32",
    )


def internvl_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """``text <img> <IMG_CONTEXT>*N </img> text`` with one tile per image (no crop_to_patches).

    N = (image_size/patch_size)^2 * downsample_ratio^2; pixel_values is
    (total_tiles, 3, H, W) = (B, 3, H, W) for one tile per sample.
    """
    gen = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    side = vc.image_size[0] // vc.patch_size[0]
    n_img = int(side * side * config.downsample_ratio**2)
    block = [INTERNVL_START_IMG] + [config.image_token_id] * n_img + [INTERNVL_END_IMG]
    layout = [5, block, 8]  # Qwen2 adds no BOS
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), gen)
    pixel_values = rand_pixels((batch_size, 3, vc.image_size[0], vc.image_size[1]), gen)
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)


# --------------------------------------------------------------------------------------
# Post-build fix-ups for random init
# --------------------------------------------------------------------------------------
def randomize_zero_init_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Re-initialise parameters that HF deliberately zero-inits and that would cut the image path.

    Gemma3's ``multi_modal_projector.mm_input_projection_weight`` is initialised to
    zeros by ``Gemma3PreTrainedModel._init_weights``, so a freshly built random
    Gemma3 ignores the image entirely (all image embeddings are 0). Call this
    after ``from_config`` for any model; it is a no-op for the other families.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mm_input_projection_weight") and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return model
