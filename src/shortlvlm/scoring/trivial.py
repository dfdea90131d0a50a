"""Sanity floors: `last` removes the deepest layers, `random` a seeded random set."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shortlvlm.scoring.base import LayerRanking, ScoringContext


@dataclass
class LastLayers:
    """Remove layers from the top of the stack down (the final layer is kept: it feeds the head)."""

    name: str = "last"
    keep_final: bool = True

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        last = context.adapter.num_layers - 1
        candidates = [i for i in context.candidates() if not (self.keep_final and i == last)]
        order = sorted(candidates, reverse=True)
        scores = [float(i) for i in range(context.adapter.num_layers)]
        return LayerRanking(scores, order, "layer index; the highest go first (final layer kept)")

    def params(self) -> dict:
        return {"keep_final": self.keep_final}


@dataclass
class RandomLayers:
    """A seeded random removal order (never the first or the final layer)."""

    name: str = "random"
    seed: int = 0

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        last = context.adapter.num_layers - 1
        order = [i for i in context.candidates() if i not in (0, last)]
        random.Random(self.seed).shuffle(order)
        scores = [float("nan")] * context.adapter.num_layers
        for position, layer in enumerate(order):
            scores[layer] = float(position)
        return LayerRanking(scores, order, "position in a seeded random order; the lowest go first")

    def params(self) -> dict:
        return {"seed": self.seed}
