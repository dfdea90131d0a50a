"""`ppl`: Shortened LLaMA's PPL criterion (Kim et al. 2024), one-shot.

Each layer is removed alone (bypassed in place: no model copy) and the perplexity of the
calibration answers is measured; the layers whose removal raises it least go first.
Differences from the original: the loss covers the answer tokens of multimodal calibration
samples (the original scores every token of BookCorpus text), pooled over all answer tokens; the
original's "+" heuristic (never remove the first four and last two blocks) belongs to its Taylor
criterion in the paper and is not applied here.
"""

from __future__ import annotations

import math

from shortlvlm.log import progress_bar
from shortlvlm.options import options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext, order_by
from shortlvlm.scoring.loss import answer_loss


@options
class Perplexity(Scorer):
    """Rank layers by the answer perplexity of the model without that one layer."""

    name = "ppl"
    needs_answers = True

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        candidates = context.candidates()
        bar = progress_bar(total=(len(candidates) + 1) * len(context.batches), desc="ppl", unit="batch", leave=False)
        with bar:
            base = answer_loss(context, progress_bar=bar)
            scores = [math.nan] * context.adapter.num_layers
            for layer in candidates:
                scores[layer] = math.exp(answer_loss(context, [layer], progress_bar=bar))
        return LayerRanking(scores, order_by(scores, candidates, descending=False),
                            "answer perplexity with only this layer removed; the lowest go first",
                            {"base_perplexity": math.exp(base)})
