"""Short-LVLM's localizer (DESIGN §2.2): cosine similarity between a layer's input and output,
measured on the important tokens only; the most similar (least transforming) layers go first.

s_l = mean over samples of (mean over the sample's important tokens of cos(h_in^l, h_out^l)),
with h_in/h_out the residual stream entering and leaving layer l (forward hooks on the layer
modules, not `output_hidden_states`, whose last entry is after the final norm).
`tokens="all"` is the ablation without TIS: every real token counts (plain cosine).
`skip_template` (default) leaves the chat template shared by all calibration samples out of the
text tokens TIS ranks (shortlvlm.importance.template_length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shortlvlm.capture import CalibrationBatch, capture
from shortlvlm.importance import (
    ImportanceAwareCollector,
    TokenImportance,
    resolve_probe_layers,
    template_length,
)
from shortlvlm.scoring.base import LayerRanking, ScoringContext, ScoringError, order_by


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


@dataclass
class TISCosine:
    """Rank layers by input/output cosine similarity on TIS-selected tokens (one-shot or iterative)."""

    name: str = "tis-cosine"
    tokens: str = "important"  # "important" (TIS top-p) or "all" (ablation: plain cosine)
    top_p: float = 0.5
    probe_layers: str | Sequence[int] = "all"
    joint: bool = False
    iterative: bool = False
    skip_template: bool = True

    def __post_init__(self) -> None:
        if self.tokens not in LayerSimilarity.SELECTIONS:
            raise ScoringError(f"tis tokens must be 'important' or 'all', got {self.tokens!r}")
        if not 0 < self.top_p <= 1:
            raise ScoringError(f"tis_top_p must be in (0, 1], got {self.top_p}")

    def params(self) -> dict:
        probe = self.probe_layers if isinstance(self.probe_layers, str) else list(self.probe_layers)
        return {"tokens": self.tokens, "tis_top_p": self.top_p, "tis_layers": probe,
                "tis_joint": self.joint, "tis_skip_template": self.skip_template, "iterative": self.iterative}

    def measure(self, context: ScoringContext, skip: Sequence[int] = (), desc: str = "score") -> LayerSimilarity:
        """One capture pass over the calibration batches with `skip` layers bypassed."""
        num_layers = context.adapter.num_layers
        importance = None
        probes: list[int] = []
        if self.tokens == "important":
            try:
                probes = resolve_probe_layers(self.probe_layers, num_layers, skip)
            except ValueError as err:
                raise ScoringError(str(err)) from err
            template = template_length(context.batches) if self.skip_template else 0
            importance = TokenImportance(probes, self.top_p, self.joint, template)
        collector = LayerSimilarity(num_layers, importance)
        capture(context.model, context.adapter, context.batches, collector, attention_layers=probes,
                skip_layers=skip, desc=desc, progress=context.progress)
        return collector

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        first = self.measure(context)
        scores = first.similarity(self.tokens)
        details = {"all_token_similarity": first.similarity("all")}
        if first.importance is not None:
            details["template_tokens_skipped"] = first.importance.template
        if first.visual_share:
            details["visual_share_of_important_tokens"] = sum(first.visual_share) / len(first.visual_share)
        meaning = f"mean cos(h_in, h_out) on {self.tokens} tokens; the highest go first"
        if not self.iterative:
            return LayerRanking(scores, order_by(scores, context.candidates(), descending=True), meaning, details)
        order: list[int] = []
        current = scores
        steps = []
        for step in range(num_remove):
            if step:
                current = self.measure(context, skip=order, desc=f"rescore {step + 1}/{num_remove}").similarity(self.tokens)
            pick = order_by(current, context.candidates(set(order)), descending=True)[0]
            order.append(pick)
            steps.append({"removed": pick, "similarity": current[pick]})
        details["iterative_steps"] = steps
        return LayerRanking(scores, order, meaning + " (re-scored after each removal)", details)
