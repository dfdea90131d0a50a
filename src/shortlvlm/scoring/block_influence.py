"""`block-influence`: ShortGPT's Block Influence (Men et al. 2024), one-shot.

BI_l = 1 - E_t[cos(h_in^l_t, h_out^l_t)], the expectation over every non-padding token t of the
calibration set (tokens pooled, not averaged per sample first); the layers with the lowest BI go
first. Differences from the original, and why:
- the original scores a text corpus (PG19); here it is the user's multimodal calibration data,
  image tokens included, so the comparison with Short-LVLM uses the same data;
- h_in/h_out come from hooks on the decoder layers. Implementations that read
  `output_hidden_states` take the final layer's output after the final norm, which inflates that
  layer's BI; the hooks see the raw residual stream of every layer alike;
- padding is excluded (the popular re-implementations count padded positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shortlvlm.capture import CalibrationBatch, Collector, capture
from shortlvlm.options import options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext, order_by


class BlockInfluenceCollector(Collector):
    """Streams sum over tokens of 1 - cos(h_in, h_out) per layer, and the token count."""

    batch_state = ("mask",)

    def __init__(self, num_layers: int):
        self.sums = torch.zeros(num_layers, dtype=torch.float64)
        self.counts = torch.zeros(num_layers, dtype=torch.float64)
        self.mask: torch.Tensor | None = None

    def begin_batch(self, batch: CalibrationBatch) -> None:
        self.mask = batch.real

    def layer_output(self, layer: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        dtype = torch.promote_types(hidden_in.dtype, torch.float32)
        cosine = F.cosine_similarity(hidden_in.to(dtype), hidden_out.to(dtype), dim=-1, eps=1e-12)
        self.sums[layer] += (1 - cosine[self.mask]).double().sum().cpu()
        self.counts[layer] += self.mask.sum().cpu()

    def influence(self) -> list[float]:
        return (self.sums / self.counts).tolist()


@options
class BlockInfluence(Scorer):
    """Rank layers by ShortGPT's Block Influence; the least influential go first."""

    name = "block-influence"

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        collector = BlockInfluenceCollector(context.adapter.num_layers)
        capture(context.model, context.adapter, context.batches, collector, desc="block influence")
        scores = collector.influence()
        order = order_by(scores, context.candidates(), descending=False)
        return LayerRanking(scores, order, "block influence 1 - mean cos(h_in, h_out) over all tokens; "
                            "the lowest go first")
