"""Shared pieces of the tiny model builders: dimensions and processor-like token layouts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PretrainedConfig

# --------------------------------------------------------------------------------------
# Shared tiny dimensions
# --------------------------------------------------------------------------------------
VOCAB = 512
TEXT_HIDDEN = 64
TEXT_INTER = 128
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
TEXT_HEAD_DIM = TEXT_HIDDEN // TEXT_HEADS  # 16

VIS_HIDDEN = 32
VIS_INTER = 64
VIS_HEADS = 4
VIS_LAYERS = 2

# Random "text" tokens are drawn from [TEXT_LO, TEXT_HI); every special /
# image-related id used below lies outside this range (except ids < TEXT_LO).
TEXT_LO, TEXT_HI = 20, 400

# A row layout is a list of segments: a list[int] is copied verbatim, an int n
# means "n random text tokens". Row 0 has its FIRST random segment shortened by
# n_pad tokens and is then left-padded, mimicking a tokenizer with
# padding_side="left" on a shorter prompt.
Segment = list[int] | int


def text_kwargs(num_layers: int, **extra) -> dict:
    """Common decoder kwargs for a tiny text backbone."""
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTER,
        num_hidden_layers=num_layers,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_KV_HEADS,
        head_dim=TEXT_HEAD_DIM,
        max_position_embeddings=256,
        dtype="float32",
    )
    kw.update(extra)
    return kw


def vision_kwargs(image_size: int, patch_size: int, **extra) -> dict:
    """Common kwargs for a tiny ViT-style vision tower."""
    kw = dict(
        hidden_size=VIS_HIDDEN,
        intermediate_size=VIS_INTER,
        num_hidden_layers=VIS_LAYERS,
        num_attention_heads=VIS_HEADS,
        image_size=image_size,
        patch_size=patch_size,
        dtype="float32",
    )
    kw.update(extra)
    return kw


def pad_id(config: PretrainedConfig) -> int:
    """Pad token id, as stored on the text sub-config (falls back to 0)."""
    pad = getattr(config.get_text_config(), "pad_token_id", None)
    return 0 if pad is None else int(pad)


def build_ids(
    layout: Sequence[Segment],
    batch_size: int,
    pad_id: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise a row layout into left-padded ``input_ids`` / ``attention_mask``.

    Row 0 gets 1-3 left pad tokens (its first random segment is shortened by the
    same amount), all other rows are unpadded, so every row has the same length
    and the same number of image placeholders.
    """
    n_pad = int(torch.randint(1, 4, (1,), generator=gen))
    first_rand = next(i for i, s in enumerate(layout) if isinstance(s, int))
    if layout[first_rand] <= n_pad:
        raise ValueError("the first random text segment is too short for left padding")
    rows, masks = [], []
    for b in range(batch_size):
        pad_b = n_pad if b == 0 else 0
        ids: list[int] = [pad_id] * pad_b
        for i, seg in enumerate(layout):
            if isinstance(seg, int):
                n = seg - pad_b if i == first_rand else seg
                ids += torch.randint(TEXT_LO, TEXT_HI, (n,), generator=gen).tolist()
            else:
                ids += list(seg)
        rows.append(ids)
        masks.append([0] * pad_b + [1] * (len(ids) - pad_b))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


def rand_pixels(shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """Normalised-looking random pixels (float32)."""
    return torch.randn(*shape, generator=gen, dtype=torch.float32)
