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
    # [B, T'] for layouts whose decoder layers see another sequence than input_ids (mPLUG-Owl2 expands
    # each image placeholder inside forward): the input position behind each position the layers see.
    source: torch.Tensor | None = None

    @property
    def text(self) -> torch.Tensor:
        return self.valid & ~self.image

    @property
    def real(self) -> torch.Tensor:
        """[B, T] every non-padding position (special tokens included)."""
        mask = self.inputs.get("attention_mask")
        mask = mask.bool() if torch.is_tensor(mask) and mask.dim() == 2 else torch.ones_like(self.inputs["input_ids"],
                                                                                            dtype=torch.bool)
        return mask if self.source is None else mask.gather(1, self.source)

    @property
    def token_ids(self) -> torch.Tensor:
        """[B, T] the token id at each position the decoder layers see (an image slot: its placeholder's)."""
        ids = self.inputs["input_ids"]
        return ids if self.source is None else ids.gather(1, self.source)

    def at_layers(self) -> CalibrationBatch:
        """This batch with its masks over the sequence the decoder layers see (itself where that is input_ids).

        Collectors reduce over layer positions, so the calibration passes and the loss hand them this view.
        """
        if self.source is None or self.valid.shape == self.source.shape:
            return self
        gather = lambda mask: None if mask is None else mask.gather(1, self.source)  # noqa: E731
        return CalibrationBatch(self.inputs, gather(self.valid), gather(self.image), gather(self.answer), self.source)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The keyword arguments of a calibration forward pass (no KV cache is built)."""
        return {**self.inputs, "use_cache": False}

    def to(self, device: torch.device | str) -> CalibrationBatch:
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        answer = None if self.answer is None else self.answer.to(device)
        source = None if self.source is None else self.source.to(device)
        return CalibrationBatch(moved, self.valid.to(device), self.image.to(device), answer, source)


def batch_from_inputs(adapter: Adapter, inputs: dict[str, torch.Tensor],
                      special_ids: Iterable[int] = ()) -> CalibrationBatch:
    """Masks for an already encoded batch: padding from attention_mask, images from the adapter.

    The masks are over input_ids; where the model's layers see another sequence, `source` maps it back
    (`CalibrationBatch.at_layers`).
    """
    input_ids = inputs["input_ids"]
    attention = inputs.get("attention_mask")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention is None else attention.bool()
    image = adapter.image_token_mask(input_ids) & valid
    special = torch.zeros_like(valid)
    for token_id in set(special_ids):
        special |= input_ids == token_id
    return CalibrationBatch(dict(inputs), valid & (~special | image), image,
                            source=adapter.layer_positions(input_ids))
