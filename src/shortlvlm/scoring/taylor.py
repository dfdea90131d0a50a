"""`taylor`: Shortened LLaMA's Taylor+ criterion (Kim et al. 2024), one-shot.

The importance of layer l is sum over its weight matrices and norm weights of |W * dL/dW| (the
first-order Taylor estimate of the loss change when the weights are zeroed), L the calibration
loss; the least important layers go first. "+": the first `keep_first` and last `keep_last`
layers are never removed (4 and 2 in the paper, for 32-layer LLaMA).
Differences from the original: L is the mean NLL of the multimodal calibration answers pooled over
all answer tokens (the original: the per-batch mean LM loss of BookCorpus text, so its batches
weigh equally rather than its tokens); biases are skipped as in the original. Gradients are taken
only for the decoder layers' weights; everything else stays frozen, and `requires_grad` and
`.grad` are restored afterwards.
"""

from __future__ import annotations

import math

import torch

from shortlvlm.io.offload import has_offloaded_weights
from shortlvlm.log import progress_bar
from shortlvlm.options import non_negative_int, option, options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext, ScoringError, order_by
from shortlvlm.scoring.loss import batch_answer_nll, count_answer_tokens


@options
class TaylorPlus(Scorer):
    """Rank layers by first-order Taylor importance of their weights; protect the ends."""

    name = "taylor"
    needs_answers = True

    keep_first: int = option(4, flag=None, check=non_negative_int, help="the first layers, never removed (\"+\")")
    keep_last: int = option(2, flag=None, check=non_negative_int, help="the last layers, never removed (\"+\")")

    def importance(self, context: ScoringContext) -> list[float]:
        """sum |W * grad| per decoder layer (weights and norm weights; biases skipped)."""
        model, layers = context.model, context.adapter.layers
        if has_offloaded_weights(model):
            raise ScoringError(
                "taylor needs gradients of the weights, but accelerate offloads some of this model's weights "
                "(CPU/disk offload), so they have none; load the model without offload or use another scorer "
                "(tis-cosine, block-influence, ppl and sleb work with offload)"
            )
        weights = [[p for name, p in layer.named_parameters() if name.endswith("weight")] for layer in layers]
        flags = {p: p.requires_grad for p in model.parameters()}
        grads = {p: p.grad for p in model.parameters()}
        total = count_answer_tokens(context.batches)
        if total == 0:
            raise ScoringError("the calibration set has no answer tokens; taylor needs answers")
        device = next(model.parameters()).device
        try:
            for p in model.parameters():
                p.requires_grad_(False)
                p.grad = None
            for p in (p for group in weights for p in group):
                p.requires_grad_(True)
            with torch.enable_grad():
                for batch in progress_bar(context.batches, desc="taylor", unit="batch",
                                  leave=False):
                    nll, _ = batch_answer_nll(model, batch.to(device))
                    (nll / total).backward()
            scores = []
            for group in weights:
                value = sum(float((p.detach().double() * p.grad.double()).abs().sum()) for p in group
                            if p.grad is not None)
                if not math.isfinite(value):
                    raise ScoringError(
                        f"the Taylor score of decoder layer {len(scores)} is {value} (gradient overflow in "
                        f"{group[0].dtype}); load the model in bfloat16 or float32 (--dtype) instead of float16"
                    )
                scores.append(value)
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
                p.grad = grads[p]
        return scores

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        num_layers = context.adapter.num_layers
        scores = self.importance(context)
        kept = (set(range(min(self.keep_first, num_layers)))
                | set(range(max(num_layers - self.keep_last, 0), num_layers)))
        order = order_by(scores, context.candidates(kept), descending=False)
        return LayerRanking(scores, order, f"sum |W * dL/dW| over the layer's weights; the lowest go first "
                            f"(first {self.keep_first} and last {self.keep_last} layers kept)")
