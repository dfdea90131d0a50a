"""The interface every layer scorer implements, and the ranking it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.errors import ShortLVLMError
from shortlvlm.models import Adapter


class ScoringError(ShortLVLMError):
    """A scorer was asked for something it cannot do (unknown name, bad parameter, ...)."""


@dataclass
class LayerRanking:
    """A scorer's verdict: one score per original layer and the order in which layers go."""

    scores: list[float]  # the scorer's own statistic per layer (NaN where it was not measured)
    order: list[int]  # removal order, most removable first; protected layers never appear
    score_meaning: str  # what a score is, and which direction is "removable"
    details: dict = field(default_factory=dict)


@dataclass
class ScoringContext:
    """What a scorer may use: the model, its adapter, encoded calibration batches."""

    model: nn.Module
    adapter: Adapter
    batches: list[CalibrationBatch]
    progress: bool = True

    def candidates(self, exclude: set[int] = frozenset()) -> list[int]:
        """Layers that may be removed: not protected by the adapter, not already excluded."""
        protected = set(self.adapter.protected_layers())
        return [i for i in range(self.adapter.num_layers) if i not in protected and i not in exclude]


def order_by(scores: list[float], candidates: list[int], *, descending: bool) -> list[int]:
    """Candidates sorted by score (NaN last), ties by layer index."""
    def key(i: int) -> tuple[bool, float, int]:
        value = scores[i]
        missing = value is None or math.isnan(value)
        return (missing, 0.0 if missing else (-value if descending else value), i)

    return sorted(candidates, key=key)
