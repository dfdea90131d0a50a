"""Tiny Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Idefics3 and SmolVLM configs and input batches."""

from __future__ import annotations

import torch
from transformers import PretrainedConfig
from transformers.models.idefics3 import Idefics3Config
from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig
from transformers.models.qwen2_vl import Qwen2VLConfig
from transformers.models.qwen3_vl import Qwen3VLConfig
from transformers.models.smolvlm import SmolVLMConfig

from shortlvlm.testbeds.tiny.common import TEXT_HIDDEN, build_ids, pad_id, text_kwargs

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_PREFIX_TEXT = 8  # text tokens before the image (row 0 loses some to left padding)
N_SUFFIX_TEXT = 8  # text tokens after the image

# Qwen-VL family special tokens (<|vision_start|>, <|vision_end|>, <|image_pad|>, <|video_pad|>)
QWEN_VISION_START_ID = 500
QWEN_VISION_END_ID = 501
QWEN_IMAGE_ID = 502
QWEN_VIDEO_ID = 503

# Idefics3 / SmolVLM special tokens. Only image_token_id lives in the model config; the other two
# are tokenizer-only ids (the model embeds them as ordinary text tokens).
IDEFICS_IMAGE_ID = 490  # "<image>"
IDEFICS_FAKE_IMAGE_ID = 491  # "<fake_token_around_image>"
IDEFICS_GLOBAL_IMAGE_ID = 492  # "<global-img>"

# Qwen image grid used by inputs_fn: (t, h, w) in *patches*; must be divisible by merge size.
QWEN_GRID_THW = (1, 4, 6)

def _finalize(cfg: PretrainedConfig) -> PretrainedConfig:
    """Force float32 + eager attention everywhere (deterministic, CPU friendly)."""
    cfg.dtype = torch.float32
    for sub in (cfg, getattr(cfg, "text_config", None), getattr(cfg, "vision_config", None)):
        if sub is not None:
            sub._attn_implementation = "eager"
            sub.dtype = torch.float32
    # top-level generation ids (generate() reads them from the top-level config). Idefics3/SmolVLM
    # keep pad in a deprecated property (set via the constructor kwarg instead, avoids a warning).
    if cfg.model_type not in ("idefics3", "smolvlm"):
        cfg.pad_token_id = PAD_ID
    cfg.bos_token_id = BOS_ID
    cfg.eos_token_id = EOS_ID
    return cfg


# --------------------------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL / Qwen3-VL configs
# --------------------------------------------------------------------------------------------
def _qwen_vision_common() -> dict:
    """Vision kwargs shared by the Qwen family: 2 blocks, hidden 32, 4x4 patches, merge 2."""
    return dict(
        depth=2,
        num_heads=2,  # vision head_dim = 16 -> axial rope uses 16 // 4 = 4 freqs per axis
        in_channels=3,
        patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )


def _qwen_ids() -> dict:
    return dict(
        image_token_id=QWEN_IMAGE_ID,
        video_token_id=QWEN_VIDEO_ID,
        vision_start_token_id=QWEN_VISION_START_ID,
        vision_end_token_id=QWEN_VISION_END_ID,
    )


def qwen2_vl_config(num_layers: int = 4) -> Qwen2VLConfig:
    """Tiny Qwen2-VL. mrope_section is split over head_dim // 2 = 8 freqs -> [2, 3, 3]."""
    text = text_kwargs(num_layers, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = _qwen_vision_common()
    # embed_dim = ViT width; hidden_size = merger OUTPUT dim (must equal the text hidden size).
    vision.update(embed_dim=32, hidden_size=TEXT_HIDDEN, mlp_ratio=2)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, **_qwen_ids())
    return _finalize(cfg)


def qwen2_5_vl_config(num_layers: int = 4) -> Qwen2_5_VLConfig:
    """Tiny Qwen2.5-VL: windowed ViT (window 16 px = 2x2 merged tokens), block 1 is full attention."""
    text = text_kwargs(num_layers, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = _qwen_vision_common()
    vision.update(
        hidden_size=32,  # ViT width
        intermediate_size=64,
        out_hidden_size=TEXT_HIDDEN,  # merger output == text hidden size
        window_size=16,  # window_size // merge // patch = 2 (must be >= 1)
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_qwen_ids())
    return _finalize(cfg)


# Qwen3-VL: deepstack features from these ViT blocks are ADDED to the outputs of text layers
# 0..len(DEEPSTACK)-1 (see Qwen3VLTextModel.forward: `layer_idx in range(len(deepstack_visual_embeds))`).
QWEN3_DEEPSTACK_VISUAL_INDEXES = [0, 1]


def qwen3_vl_config(num_layers: int = 4) -> Qwen3VLConfig:
    """Tiny Qwen3-VL with deepstack on. Interleaved mrope: sum(mrope_section) == head_dim // 2 = 8."""
    text = text_kwargs(num_layers, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    # head_dim is explicit in Qwen3 (default 128!): text_kwargs sets it.
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [4, 2, 2],  # H idx = 1,4 ; W idx = 2,5 ; rest T  (all < 8)
        "mrope_interleaved": True,
    }
    vision = _qwen_vision_common()
    vision.update(
        hidden_size=32,
        intermediate_size=64,
        out_hidden_size=TEXT_HIDDEN,
        num_position_embeddings=64,  # must be a perfect square (8x8 learned grid, bilinear-resampled)
        deepstack_visual_indexes=list(QWEN3_DEEPSTACK_VISUAL_INDEXES),
    )
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_ids())
    return _finalize(cfg)


# --------------------------------------------------------------------------------------------
# Idefics3 / SmolVLM configs
# --------------------------------------------------------------------------------------------
def _idefics_like_kwargs(num_layers: int) -> dict:
    """SigLIP-ish 32px tower, 4px patches -> 8x8=64 patches -> pixel shuffle 2 -> 16 image tokens."""
    text = text_kwargs(num_layers, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    text["model_type"] = "llama"
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_channels=3,
        image_size=32,
        patch_size=4,
    )
    return dict(
        text_config=text,
        vision_config=vision,
        image_token_id=IDEFICS_IMAGE_ID,
        scale_factor=2,
        pad_token_id=PAD_ID,
    )


def idefics3_config(num_layers: int = 4) -> Idefics3Config:
    """Tiny Idefics3 (Llama text model)."""
    return _finalize(Idefics3Config(**_idefics_like_kwargs(num_layers)))


def smolvlm_config(num_layers: int = 4) -> SmolVLMConfig:
    """Tiny SmolVLM (same architecture as Idefics3, different connector/processor details)."""
    return _finalize(SmolVLMConfig(**_idefics_like_kwargs(num_layers)))


# --------------------------------------------------------------------------------------------
# Input builders
# --------------------------------------------------------------------------------------------
def qwen_num_image_tokens(config: PretrainedConfig, grid_thw: tuple[int, int, int] = QWEN_GRID_THW) -> int:
    """Number of <|image_pad|> tokens per image = t*h*w / merge_size**2 (as in Qwen2VLProcessor)."""
    t, h, w = grid_thw
    return (t * h * w) // config.vision_config.spatial_merge_size**2


def qwen_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL batch (one image per sample, identical grids).

    * input_ids: ... <|vision_start|> <|image_pad|>*N <|vision_end|> ...
    * pixel_values: (B * t*h*w, C * temporal_patch * patch * patch), image b occupies rows
      [b*t*h*w, (b+1)*t*h*w). Patch order is merge-block-major (as Qwen2VLImageProcessor.patchify);
      for random pixels the order does not matter.
    * image_grid_thw: (B, 3)
    * mm_token_type_ids: 1 on <|image_pad|> tokens only (ProcessorMixin.create_mm_token_type_ids);
      REQUIRED in 5.x whenever image_grid_thw is given (else ValueError / no M-RoPE).
    """
    g = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    t, h, w = QWEN_GRID_THW
    n_tok = qwen_num_image_tokens(config)
    mm_block = [config.vision_start_token_id] + [config.image_token_id] * n_tok + [config.vision_end_token_id]
    layout = [N_PREFIX_TEXT, mm_block, N_SUFFIX_TEXT]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), g)
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size * vc.patch_size
    pixel_values = torch.randn(batch_size * t * h * w, patch_dim, generator=g, dtype=torch.float32)
    image_grid_thw = torch.tensor([list(QWEN_GRID_THW)] * batch_size, dtype=torch.long)
    mm_token_type_ids = (input_ids == config.image_token_id).long()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "image_grid_thw": image_grid_thw,
        "mm_token_type_ids": mm_token_type_ids,
    }


def idefics_image_seq_len(config: PretrainedConfig) -> int:
    """<image> tokens per (sub-)image = (image_size // patch_size)**2 / scale_factor**2."""
    vc = config.vision_config
    return (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2


def idefics_inputs(config: PretrainedConfig, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Idefics3 / SmolVLM batch, one un-split image per sample (do_image_splitting=False layout).

    * input_ids: <bos> ... <fake_token_around_image> <global-img> <image>*image_seq_len
      <fake_token_around_image> ...
    * pixel_values: (B, 1, C, image_size, image_size); pixel_attention_mask: (B, 1, H, W) int64 of 1s.
      NOTE: an all-zero image is treated as padding and dropped by the model.
    """
    g = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    n_tok = idefics_image_seq_len(config)
    mm_block = [IDEFICS_FAKE_IMAGE_ID, IDEFICS_GLOBAL_IMAGE_ID] + [config.image_token_id] * n_tok + [
        IDEFICS_FAKE_IMAGE_ID
    ]
    layout = [[BOS_ID], N_PREFIX_TEXT - 1, mm_block, N_SUFFIX_TEXT]
    input_ids, attention_mask = build_ids(layout, batch_size, pad_id(config), g)
    size = vc.image_size
    pixel_values = torch.randn(batch_size, 1, vc.num_channels, size, size, generator=g, dtype=torch.float32)
    pixel_attention_mask = torch.ones(batch_size, 1, size, size, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "pixel_attention_mask": pixel_attention_mask,
    }
