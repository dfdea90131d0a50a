"""`angular`: the angular distance of Gromov et al. 2024 ("The Unreasonable Ineffectiveness of the
Deeper Layers"), removing the best contiguous block.

For a block of n layers starting at l: d(l, n) = arccos(cos(x^l_T, x^{l+n}_T)) / pi, x^l the
residual stream entering layer l (x^L: leaving the last layer), T the last token of each sequence,
averaged over the calibration samples. For n layers to remove, the block l*..l*+n-1 with the
smallest distance goes. Blocks of different sizes need not nest, so the plan stores one removal
set per size (`removal_sets`) and `prune` takes the one for its count.
Differences from the original: multimodal calibration data instead of a text corpus; the last
*real* token (padding skipped); blocks never contain layers the architecture protects. The
original "heals" the cut with QLoRA; this project does not train (use --compensation scp instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shortlvlm.capture import CalibrationBatch, Collector, capture
from shortlvlm.options import options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext, order_by


def last_real_position(batch: CalibrationBatch) -> torch.Tensor:
    """[B] index of each row's last non-padding token."""
    mask = batch.real
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values


class BoundaryDistance(Collector):
    """Streams the summed angular distance between every pair of layer boundaries (last token)."""

    batch_state = ("last", "states")

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.sums = torch.zeros(num_layers + 1, num_layers + 1, dtype=torch.float64)
        self.samples = 0
        self.states: dict[int, torch.Tensor] = {}

    def begin_batch(self, batch: CalibrationBatch) -> None:
        self.last = last_real_position(batch)
        self.states = {}

    def _take(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, self.last.to(hidden.device)].to(torch.float64).cpu()

    def layer_output(self, layer: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        self.states[layer] = self._take(hidden_in)
        if layer == self.num_layers - 1:
            self.states[layer + 1] = self._take(hidden_out)

    def end_batch(self) -> None:
        stacked = torch.stack([self.states[i] for i in range(self.num_layers + 1)], dim=1)  # [B, L+1, d]
        unit = F.normalize(stacked, dim=-1, eps=1e-12)
        cosine = (unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)
        self.sums += (torch.arccos(cosine) / math.pi).sum(dim=0)
        self.samples += stacked.shape[0]
        self.states = {}

    def distances(self) -> torch.Tensor:
        """[L+1, L+1] mean angular distance between boundaries i and j (in units of pi)."""
        return self.sums / self.samples


def best_blocks(distance: torch.Tensor, candidates: list[int], max_size: int) -> dict[int, list[int]]:
    """For each size n, the contiguous block of candidate layers whose ends are closest."""
    allowed = set(candidates)
    blocks: dict[int, list[int]] = {}
    for size in range(1, max_size + 1):
        starts = [s for s in range(distance.shape[0] - size) if all(i in allowed for i in range(s, s + size))]
        if starts:
            best = min(starts, key=lambda s: (float(distance[s, s + size]), s))
            blocks[size] = list(range(best, best + size))
    return blocks


@options
class AngularBlock(Scorer):
    """Remove the contiguous block whose input and output are closest in angle (last token)."""

    name = "angular"
    needs_count = True

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        num_layers = context.adapter.num_layers
        collector = BoundaryDistance(num_layers)
        capture(context.model, context.adapter, context.batches, collector, desc="angular distance")
        distance = collector.distances()
        candidates = context.candidates()
        blocks = best_blocks(distance, candidates, num_layers - 1)
        scores = [float(distance[i, i + 1]) for i in range(num_layers)]
        chosen = blocks.get(num_remove, [])
        order = chosen + [i for i in order_by(scores, candidates, descending=False) if i not in chosen]
        details = {"removal_sets": {str(n): block for n, block in blocks.items()},
                   "block_distance": {str(n): float(distance[b[0], b[0] + n]) for n, b in blocks.items()}}
        return LayerRanking(scores, order, "angular distance arccos(cos(x^l, x^l+1))/pi of the last token; "
                            "n layers go as the contiguous block with the smallest distance (removal_sets)",
                            details)
