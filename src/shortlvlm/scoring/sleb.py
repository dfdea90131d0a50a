"""`sleb`: SLEB (Song et al. 2024), greedy removal with re-evaluation after every step.

Step k tries removing each remaining layer together with the k-1 already chosen ones (bypassed in
place, no model copy per trial) and keeps the one whose removal gives the lowest answer
perplexity. It costs (L + L-1 + ... + L-n+1) calibration passes for n layers, so a plan ranks only
as many layers as were asked for (`shortlvlm score --max-ratio`).
Differences from the original: the metric is the perplexity of multimodal calibration answers
(the original uses WikiText-2 text), pooled over all answer tokens.
"""

from __future__ import annotations

import math

from shortlvlm.log import progress_bar
from shortlvlm.options import options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext
from shortlvlm.scoring.loss import answer_loss


@options
class SLEB(Scorer):
    """Greedily remove the layer whose removal least raises the answer perplexity, then repeat."""

    name = "sleb"
    needs_answers = True
    needs_count = True

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        candidates = context.candidates()
        num_remove = min(num_remove, len(candidates))
        trials = sum(len(candidates) - step for step in range(num_remove))
        bar = progress_bar(total=trials * len(context.batches), desc="sleb", unit="batch", leave=False)
        order: list[int] = []
        steps = []
        scores = [math.nan] * context.adapter.num_layers
        with bar:
            for step in range(num_remove):
                trial = {layer: math.exp(answer_loss(context, [*order, layer], progress_bar=bar))
                         for layer in context.candidates(set(order))}
                pick = min(trial, key=lambda layer: (trial[layer], layer))
                if step == 0:
                    for layer, value in trial.items():
                        scores[layer] = value
                order.append(pick)
                steps.append({"removed": pick, "perplexity": trial[pick]})
        return LayerRanking(scores, order, "answer perplexity with only this layer removed (first greedy step); "
                            "the order is greedy, re-evaluated after each removal", {"greedy_steps": steps})
