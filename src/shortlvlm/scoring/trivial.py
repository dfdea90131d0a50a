"""Sanity floors: `last` removes the deepest layers, `random` a seeded random set."""

from __future__ import annotations

import random

from shortlvlm.options import is_bool, option, options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext


@options
class LastLayers(Scorer):
    """Remove layers from the top of the stack down (the final layer is kept: it feeds the head)."""

    name = "last"
    needs_data = False

    keep_final: bool = option(True, flag=None, check=is_bool, help="never remove the final layer (it feeds the head)")

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        last = context.adapter.num_layers - 1
        candidates = [i for i in context.candidates() if not (self.keep_final and i == last)]
        order = sorted(candidates, reverse=True)
        scores = [float(i) for i in range(context.adapter.num_layers)]
        return LayerRanking(scores, order, "layer index; the highest go first (final layer kept)")


@options
class RandomLayers(Scorer):
    """A seeded random removal order (never the first or the final layer)."""

    name = "random"
    needs_data = False

    seed: int = option(0, help="seed of --method random")

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        last = context.adapter.num_layers - 1
        order = [i for i in context.candidates() if i not in (0, last)]
        random.Random(self.seed).shuffle(order)
        scores = [float("nan")] * context.adapter.num_layers
        for position, layer in enumerate(order):
            scores[layer] = float(position)
        return LayerRanking(scores, order, "position in a seeded random order; the lowest go first")
