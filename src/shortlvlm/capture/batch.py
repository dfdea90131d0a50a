"""A calibration batch: the model's inputs plus the token masks every statistic is reduced over."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from shortlvlm.models import Adapter


@dataclass
class CalibrationBatch:
    """Model inputs plus the token masks the statistics need, all shaped [batch, seq]."""

    inputs: dict[str, torch.Tensor]
    valid: torch.Tensor  # real tokens: not padding, not special (BOS/EOS/template specials)
    image: torch.Tensor  # image-placeholder positions (a subset of valid)
    answer: torch.Tensor | None = None  # positions of answer tokens, for loss-based scorers

    @property
    def text(self) -> torch.Tensor:
        return self.valid & ~self.image

    @property
    def real(self) -> torch.Tensor:
        """[B, T] every non-padding position (special tokens included)."""
        mask = self.inputs.get("attention_mask")
        return mask.bool() if torch.is_tensor(mask) and mask.dim() == 2 else torch.ones_like(self.valid)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of a calibration forward pass (no KV cache is built)."""
        return {**self.inputs, "use_cache": False}

    def to(self, device: torch.device | str) -> CalibrationBatch:
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        answer = None if self.answer is None else self.answer.to(device)
        return CalibrationBatch(moved, self.valid.to(device), self.image.to(device), answer)


def batch_from_inputs(adapter: Adapter, inputs: dict[str, torch.Tensor], special_ids: Iterable[int] = ()) -> CalibrationBatch:
    """Masks for an already encoded batch: padding from attention_mask, images from the adapter."""
    input_ids = inputs["input_ids"]
    attention = inputs.get("attention_mask")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention is None else attention.bool()
    image = adapter.image_token_mask(input_ids) & valid
    special = torch.zeros_like(valid)
    for token_id in set(special_ids):
        special |= input_ids == token_id
    return CalibrationBatch(dict(inputs), valid & (~special | image), image)
