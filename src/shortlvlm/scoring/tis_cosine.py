"""Short-LVLM's localizer (docs/design.md §2.2): cosine similarity between a layer's input and output,
measured on the important tokens only; the most similar (least transforming) layers go first.

s_l = mean over samples of (mean over the sample's important tokens of cos(h_in^l, h_out^l)),
with h_in/h_out the residual stream entering and leaving layer l (forward hooks on the layer
modules, not `output_hidden_states`, whose last entry is after the final norm).
Which tokens count is the scorer's `tis` (shortlvlm.importance.TIS): `tokens="all"` is the ablation
without TIS (plain cosine on every real token); `skip_template` (default) leaves the chat template
shared by all calibration samples out of the text tokens TIS ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from shortlvlm.capture import CalibrationBatch, capture
from shortlvlm.importance import TIS, ImportanceAwareCollector, TokenImportance
from shortlvlm.options import is_bool, option, options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext, order_by


def _per_sample_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of `values` over each row's masked entries, which rows have any)."""
    counts = mask.sum(dim=1)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=1)
    return total / counts.clamp(min=1), counts > 0


class LayerSimilarity(ImportanceAwareCollector):
    """Streams per-layer cos(h_in, h_out), averaged per sample over important and over all tokens."""

    SELECTIONS = ("important", "all")
    batch_state = ("batch", "cosines")

    def __init__(self, num_layers: int, importance: TokenImportance | None):
        super().__init__(importance)
        self.sums = {s: torch.zeros(num_layers, dtype=torch.float64) for s in self.SELECTIONS}
        self.samples = {s: torch.zeros(num_layers, dtype=torch.float64) for s in self.SELECTIONS}
        self.visual_share = []  # fraction of important tokens that are image tokens, per sample
        self.cosines: dict[int, torch.Tensor] = {}

    def begin_batch(self, batch: CalibrationBatch) -> None:
        super().begin_batch(batch)
        self.cosines = {}

    def layer_output(self, layer: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        dtype = torch.promote_types(hidden_in.dtype, torch.float32)
        self.cosines[layer] = F.cosine_similarity(hidden_in.to(dtype), hidden_out.to(dtype), dim=-1, eps=1e-12)

    def end_batch(self) -> None:
        masks = {"all": self.batch.valid}
        if self.importance is not None:
            masks["important"] = self.selected_tokens()
            selected = masks["important"]
            share = (selected & self.batch.image).sum(1) / selected.sum(1).clamp(min=1)
            self.visual_share.extend(share.tolist())
        for selection, mask in masks.items():
            for layer, cosine in self.cosines.items():
                means, present = _per_sample_mean(cosine, mask)
                self.sums[selection][layer] += means[present].sum().double().cpu()
                self.samples[selection][layer] += present.sum().cpu()
        self.cosines = {}

    def similarity(self, selection: str) -> list[float]:
        """Mean cosine per layer (NaN for layers never measured)."""
        values = self.sums[selection] / self.samples[selection]
        return [v if self.samples[selection][i] > 0 else math.nan for i, v in enumerate(values.tolist())]


@options
class TISCosine(Scorer):
    """Rank layers by input/output cosine similarity on TIS-selected tokens (one-shot or iterative)."""

    name = "tis-cosine"

    tis: TIS = option(default_factory=TIS, help="which tokens the layers are judged on (Token Importance Scores)")
    iterative: bool = option(False, check=is_bool, help="re-score after each removal (one pass per layer)")

    @property
    def needs_count(self) -> bool:
        """Iterative scoring ranks only as many layers as will go (one pass per layer)."""
        return self.iterative

    def measure(self, context: ScoringContext, skip: Sequence[int] = (), desc: str = "score") -> LayerSimilarity:
        """One capture pass over the calibration batches with `skip` layers bypassed."""
        num_layers = context.adapter.num_layers
        importance = self.tis.importance(context.batches, num_layers, skip)
        probes = importance.probe_layers if importance is not None else []
        collector = LayerSimilarity(num_layers, importance)
        capture(context.model, context.adapter, context.batches, collector, attention_layers=probes,
                skip_layers=skip, desc=desc)
        return collector

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        first = self.measure(context)
        scores = first.similarity(self.tis.tokens)
        details = {"all_token_similarity": first.similarity("all")}
        if first.importance is not None:
            details["template_tokens_skipped"] = first.importance.template
        if first.visual_share:
            details["visual_share_of_important_tokens"] = sum(first.visual_share) / len(first.visual_share)
        meaning = f"mean cos(h_in, h_out) on {self.tis.tokens} tokens; the highest go first"
        if not self.iterative:
            return LayerRanking(scores, order_by(scores, context.candidates(), descending=True), meaning, details)
        order: list[int] = []
        current = scores
        steps = []
        for step in range(num_remove):
            if step:
                current = self.measure(context, skip=order,
                                       desc=f"rescore {step + 1}/{num_remove}").similarity(self.tis.tokens)
            pick = order_by(current, context.candidates(set(order)), descending=True)[0]
            order.append(pick)
            steps.append({"removed": pick, "similarity": current[pick]})
        details["iterative_steps"] = steps
        return LayerRanking(scores, order, meaning + " (re-scored after each removal)", details)
