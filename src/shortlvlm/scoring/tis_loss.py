"""`tis-loss`: the token-aware cosine shortlists, a few answer-loss passes decide (docs/design.md §2.5).

Beyond the paper. Short-LVLM's cosine on important tokens is cheap (one calibration pass) but on
the toy it misses the best 30% cut that the loss-based searches find (SLEB, PPL: 91.6% against
85.0%), at 46x and 11x its scoring time. This scorer keeps the cheap signal to choose *where to
look* and spends loss passes only there:

1. TIS-cosine (the paper's localizer, same `tis` options) ranks every layer in one pass; the
   `n + extra` most similar layers form the pool, extra = max(`pool_min_extra`, ceil(`pool_extra`·n)).
2. The answer loss with each pool layer bypassed alone (one pass per pool layer): PPL's rule,
   restricted to the pool.
3. Greedy confirmation (`recheck` > 1): the first layer is the pool's lowest one-shot loss; each
   further step tries the `recheck` lowest remaining pool layers together with those already
   removed and keeps the lowest loss (SLEB's step, on a shortlist), which catches pairs of layers
   that are harmless alone and harmful together.
4. Full steps (`full_steps` = F > 0): the first F greedy steps after the first removal try every
   remaining pool layer (SLEB's step restricted to the pool), and the shortlists of the later steps
   follow the losses of the last full step instead of the one-shot ones. On a pretrained LM removals
   interact (smol-llava: a layer that costs little only once another is gone), which the one-shot
   order misses (docs/design.md §2.5).

Cost in calibration passes, for n layers removed out of L: 1 capture pass with attention maps
(TIS-cosine) + P one-shot loss passes (P = n + extra) + (P-1) + ... + (P-F) full-step passes +
recheck·(n-1-F) greedy passes (none for recheck <= 1); SLEB costs L + (L-1) + ... + (L-n+1) loss
passes and PPL costs L. With the defaults (extra 0.5, at least 2; F = 4; recheck 3): L=30, n=12
(40%): 1 + 18 + (17 + 16 + 15 + 14) + 21 = 102 passes against SLEB's 294; n=9: 1 + 14 + (13 + 12
+ 11 + 10) + 12 = 73 against 234; the toy, L=16, n=6: 1 + 9 + (8 + 7 + 6 + 5) + 3 = 39 against 81.
What a pass costs: bypassed layers are not computed, and a loss pass that removes `layer` on top of
the chosen ones starts at `layer` from the stored residual streams of the current model (the
model is unchanged below it; `_PoolStreams`), so it runs only the layers above `layer` that are
kept, plus the embeddings and the head (every loss pass after the first reuses the image
encoder's output: scoring/loss.py). A pass of SLEB's at step k runs L-k-1
layers from the input: Σ_{k<n} (L-k)(L-k-1) decoder layers (1030 on the toy at n=6, 7052 at
L=30, n=12), against 1577 for this scorer on smol-llava (22%; its capture pass included, 64
calibration samples, counted by benchmarks/tis_loss_selection.py with loss_scoring_cost.py's
counter; design §2.5 has the toy's count and the measured times). The stored
streams are one [batch, tokens, hidden] tensor per pool layer and calibration batch, held on the
CPU in the model's dtype, up to three sets at once (the current
model's, the best trial's so far, the pass being recorded): about 3·P·(calibration tokens)·hidden
values, 20 GB for a 7B model (hidden 4096, bf16) with 64 samples of 700 tokens and P = 18;
`--loss-recompute` runs every pass from the input instead and stores nothing (same losses).
With `bridge` (the default, scoring/bridged.py, docs/design.md §2.5.1) every trial is measured with its
least-squares bridge applied: one more full pass per greedy step fits the bridges, and a trial starts one
layer lower (at the kept layer whose writer the bridge edits).
The defaults were chosen on held-out selection questions (benchmarks/tis_loss_selection.py),
not on the test split.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import ClassVar

from shortlvlm.errors import CompensationError
from shortlvlm.importance import TIS
from shortlvlm.log import progress_bar
from shortlvlm.options import is_bool, non_negative_int, option, options
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext, order_by
from shortlvlm.scoring.bridged import BridgedPool
from shortlvlm.scoring.loss import Resume, answer_loss_streams
from shortlvlm.scoring.tis_cosine import TISCosine

log = logging.getLogger(__name__)


def _non_negative(value: object) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) and value >= 0 else "must be a finite number >= 0"


def pool_size(num_remove: int, num_candidates: int, extra: float, min_extra: int) -> int:
    """How many of the most similar layers the loss passes look at (never more than exist)."""
    return min(num_candidates, num_remove + max(min_extra, math.ceil(extra * num_remove)))


@options
class TISLoss(Scorer):
    """TIS-cosine picks a pool of candidate layers; the answer loss orders and confirms them."""

    name = "tis-loss"
    needs_answers = True
    recorded_before: ClassVar[dict] = {"bridge": False}  # plans written before the bridged passes ranked bare
    needs_count = True  # the pool's size and the greedy steps depend on how many layers go
    order_depends_on_count = True  # a larger pool can put other layers first

    tis: TIS = option(default_factory=TIS, help="which tokens the cosine is measured on (Token Importance Scores)")
    pool_extra: float = option(0.5, check=_non_negative, flag="--loss-pool-extra",
                               help="pool = n + max(--loss-pool-min-extra, ceil(this * n)) most similar layers")
    pool_min_extra: int = option(2, check=non_negative_int, flag="--loss-pool-min-extra",
                                 help="at least this many pool layers beyond the n to remove")
    recheck: int = option(3, check=non_negative_int, flag="--loss-recheck",
                          help="greedy steps try this many lowest-loss pool layers with the removed ones bypassed "
                               "(0 or 1: order by one-shot loss only)")

    full_steps: int = option(4, check=non_negative_int, flag="--loss-full-steps",
                             help="the first this many greedy steps after the first removal re-measure every "
                                  "remaining pool layer with the removed ones bypassed (SLEB's step on the pool); "
                                  "later shortlists follow the last such measurement (0: the one-shot losses)")

    bridge: bool = option(True, check=is_bool, flag="--loss-bridge",
                          help="measure each trial with the least-squares bridge of the layer it removes applied "
                               "(fitted on the model with the chosen layers removed and bridged; one more pass "
                               "per step): the ranking for a model pruned with --compensation lstsq, chosen on "
                               "smol-llava's selection split (docs/design.md §2.5.1); --no-loss-bridge: the bare "
                               "losses, for pruning without a bridge")
    bridge_ridge: float = option(0.01, check=_non_negative, flag="--loss-bridge-ridge",
                                 help="ridge of those bridges, as a fraction of tr(A^T A)/d (--lstsq-ridge's "
                                      "meaning)")

    recompute: bool = option(False, check=is_bool, flag="--loss-recompute",
                             help="run every loss pass from the input (pixels included) instead of from the "
                                  "stored streams entering the first layer it changes and the kept image-encoder "
                                  "output (same losses, more compute; for checking)")

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        cosine = TISCosine(tis=self.tis)
        similarity = cosine.measure(context).similarity(self.tis.tokens)
        by_similarity = order_by(similarity, context.candidates(), descending=True)
        num_remove = min(num_remove, len(by_similarity))
        pool = by_similarity[:pool_size(num_remove, len(by_similarity), self.pool_extra, self.pool_min_extra)]
        full = min(self.full_steps, max(0, num_remove - 1))
        shortlisted = max(0, num_remove - 1 - full)
        greedy_trials = (sum(len(pool) - step for step in range(1, full + 1))
                         + (min(self.recheck, len(pool)) if self.recheck > 1 else 0) * shortlisted)
        if self.recompute:  # every pass from the pixels: no stored streams, the image encoder run each time
            context = dataclasses.replace(context, reuse_encoder=False)
        streams, bridged = _PoolStreams(context, pool, enabled=not self.recompute), "off"
        if self.bridge:
            try:
                streams = BridgedPool(context, pool, enabled=not self.recompute, ridge=self.bridge_ridge)
                bridged = "on"
            except CompensationError as err:  # Gemma 3: no writer a linear map edits; the bare losses rank
                bridged = f"off: {err}"
                log.warning("tis-loss ranks by the bare answer losses: %s", err)
        fit_passes = max(num_remove, 1) if bridged == "on" else 0  # one per step, the one-shot step included
        bar = progress_bar(total=(len(pool) + greedy_trials + fit_passes) * len(context.batches), desc="tis-loss",
                           unit="batch", leave=False)
        scores = [math.nan] * context.adapter.num_layers
        steps = []
        with bar:
            streams.step([], bar)
            # one-shot losses, highest pool layer first: that pass runs from the input and keeps the
            # unpruned streams entering every lower pool layer, where the other passes start
            for layer in sorted(pool, reverse=True):
                scores[layer] = math.exp(streams.loss([], layer, bar))
            latest = {layer: scores[layer] for layer in pool}  # the losses the shortlists are drawn from
            by_loss = order_by(scores, pool, descending=False)
            order = by_loss[:1] if num_remove else []
            if order:
                steps.append({"removed": order[0], "perplexity": scores[order[0]], "tried": order[:]})
                streams.removed(order[0])
            while len(order) < num_remove:
                streams.step(order, bar)
                remaining = sorted((layer for layer in pool if layer not in order), key=lambda la: (latest[la], la))
                full_step = len(order) <= full  # every remaining pool layer; its losses rank the later shortlists
                shortlist = remaining if full_step else remaining[:max(1, self.recheck)]
                if len(shortlist) == 1:  # recheck 0 or 1, or one pool layer left: nothing to compare
                    order.append(shortlist[0])
                    streams.removed(shortlist[0], measured=False)
                    continue
                trial = {layer: math.exp(streams.loss(order, layer, bar)) for layer in shortlist}
                if full_step:
                    latest = trial
                pick = min(trial, key=lambda layer: (trial[layer], layer))
                order.append(pick)
                streams.removed(pick)
                steps.append({"removed": pick, "perplexity": trial[pick], "tried": shortlist})
        details = {"tis_cosine_similarity": similarity, "pool": pool, "greedy_steps": steps,
                   "loss_passes": len(pool) + sum(len(s["tried"]) for s in steps[1:]),
                   "decoder_layers_run": streams.layers_run,
                   **({"bridge": bridged} if self.bridge else {}),
                   **({"bridge_fit_passes": streams.fit_passes} if bridged == "on" else {})}
        return LayerRanking(scores, order, "answer perplexity with only this layer removed, measured on the pool of "
                            "the most TIS-cosine-similar layers (NaN outside it); the order is greedy", details)


class _PoolStreams:
    """The residual streams entering the pool layers in the model with the chosen layers removed, so a
    loss pass that changes nothing below layer l starts at l (docs/design.md §2.5).

    A trial removing `layer` on top of the chosen ones is identical to the current model below
    `layer`; it starts from the stored stream there and keeps the streams entering the pool layers
    above it. The best trial's streams replace the stored ones above the layer it removes (below it
    nothing changed); the others are dropped, so at most three sets are held (on the CPU): the
    current model's, the best trial's so far, and the pass being recorded.
    """

    def __init__(self, context: ScoringContext, pool: list[int], *, enabled: bool):
        self.context, self.pool, self.enabled = context, sorted(pool), enabled
        self.current: dict[int, list] = {}  # pool layer -> per-batch streams entering it in the current model
        self.best: tuple[float, int, dict[int, list]] | None = None  # (loss, layer, streams) of this step's best trial
        self.layers_run = 0

    def step(self, chosen: list[int], bar) -> None:
        """Nothing to prepare before a greedy step (BridgedPool fits its bridges here)."""

    def loss(self, chosen: list[int], layer: int, bar) -> float:
        """Answer loss with `chosen` and `layer` bypassed, started as high as the stored streams allow."""
        resume = Resume(layer, self.current[layer]) if self.enabled and layer in self.current else None
        start = layer if resume is not None else 0
        # the pass from the input (the first one) keeps the unpruned streams below `layer` too
        record = [la for la in self.pool if la not in chosen and la != layer and (la > layer or not self.current)]
        loss, recorded = answer_loss_streams(self.context, [*chosen, layer], resume=resume,
                                             record=record if self.enabled else (), progress_bar=bar)
        removed = {*chosen, layer}
        self.layers_run += sum(1 for la in range(start, self.context.adapter.num_layers) if la not in removed)
        if self.enabled:
            for la in [la for la in recorded if la < layer]:
                self.current.setdefault(la, recorded.pop(la))
            if self.best is None or (loss, layer) < self.best[:2]:
                self.best = (loss, layer, recorded)
        return loss

    def removed(self, layer: int, *, measured: bool = True) -> None:
        """`layer` joins the chosen ones: the stored streams above it become those of its trial."""
        best, self.best = self.best, None
        if not self.enabled:
            return
        self.current = {la: streams for la, streams in self.current.items() if la < layer}
        if measured and best is not None and best[1] == layer:
            self.current.update(best[2])
        # unmeasured (a forced pick): the streams above it are unknown, so passes there start lower
