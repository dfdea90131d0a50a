"""The interface every layer scorer implements (`Scorer`), what it may use, and the ranking it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.errors import ScoringError
from shortlvlm.models import Adapter
from shortlvlm.options import Options


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
    # Each batch's image-encoder output (vision tower + projector), kept by the first loss pass and
    # handed to the later ones, which then skip the encoder (scoring/loss.py, docs/design.md §2.4).
    encoder_outputs: dict[int, object] = field(default_factory=dict)
    reuse_encoder: bool = True

    def candidates(self, exclude: set[int] = frozenset()) -> list[int]:
        """Layers that may be removed: not protected by the adapter, not already excluded."""
        protected = set(self.adapter.protected_layers())
        return [i for i in range(self.adapter.num_layers) if i not in protected and i not in exclude]


class Scorer(Options):
    """A layer scorer: its fields are its options (frozen, with help text), `rank` orders the layers."""

    error = ScoringError
    name: ClassVar[str] = ""
    # Whether the ranking depends on how many layers go, so scoring needs the count (sleb, angular).
    needs_count: ClassVar[bool] = False
    # Whether the first k layers of a ranking made for n > k can differ from a ranking made for k (tis-loss's
    # pool grows with n; LaCo's thresholds and last merge depend on it). A greedy order (sleb) does not; a
    # block per count (angular) is kept per count. `compare` ranks once for its largest ratio and says so.
    order_depends_on_count: ClassVar[bool] = False
    # Whether the scorer reads the calibration set (last and random do not).
    needs_data: ClassVar[bool] = True
    # Whether it measures the loss on the calibration answers, so some sample must have one (sleb, ppl, ...).
    needs_answers: ClassVar[bool] = False

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        raise NotImplementedError


def order_by(scores: list[float], candidates: list[int], *, descending: bool) -> list[int]:
    """Candidates sorted by score (NaN last), ties by layer index."""
    def key(i: int) -> tuple[bool, float, int]:
        value = scores[i]
        missing = value is None or math.isnan(value)
        return (missing, 0.0 if missing else (-value if descending else value), i)

    return sorted(candidates, key=key)
