"""`laco`: LaCo's own layer selection (Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse";
docs/design.md §2.6.4), the walk that decides which layers its merge (compensation/laco.py) collapses.

The walk goes down the model from the top. At kept layer r it tries collapsing the next `merge_size - 1` kept
layers above r into r (the merge θ_r <- θ_r + Σ_k (θ_pk - θ_r), those layers bypassed) on top of the merges
it has accepted, and measures how similar the last decoder layer's output stays to the unpruned model's:
the cosine per real token of the first `samples` calibration samples, averaged. Above `threshold` the merge
is kept and the walk goes on below it; else it moves one layer down. Until `num_remove` layers are gone:
the last merge takes only as many layers as are still needed.

Where this differs from the paper, and why:
- LaCo fixes the threshold and reports the ratio it gets; a ratio is what a user asks for here, so a walk
  that ends short lowers the threshold by `threshold_step` and walks again from the top, the accepted
  merges kept (after a walk that kept nothing, straight to the first step at or below the best similarity it
  measured: the walks in between would repeat it). The thresholds each merge passed are in the ranking's
  details.
- The paper lets a later merge absorb an already merged layer (interval 2 < merge size 4). Here a layer
  takes part in one merge at most, so each merge is a run of removed layers collapsed into the kept layer
  directly below it, and `--compensation laco` on the chosen layers writes exactly the model the walk
  measured (a test checks this).
- Representations: the paper compares the final hidden states on a few text sentences; here the last
  decoder layer's output (the residual stream before the final norm) on the user's multimodal calibration
  samples, every real token, image tokens included.

Cost: one pass over `samples` samples per tried merge; a walk tries at most one merge per kept layer.
The weights are restored before `rank` returns (read and written through the offload map when offloaded).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F

from shortlvlm.capture import CalibrationBatch, Collector, capture
from shortlvlm.compensation.laco import layer_parameters, merged_layer
from shortlvlm.compensation.runs import RemovedRun
from shortlvlm.errors import CompensationError, ScoringError
from shortlvlm.io.offload import read_weight, write_weight
from shortlvlm.log import progress_bar
from shortlvlm.options import option, options, positive_int
from shortlvlm.scoring.base import LayerRanking, Scorer, ScoringContext


def merge_width(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 2
    return None if ok else "must be an integer >= 2 (the kept layer and at least one layer collapsed into it)"


def cosine_threshold(value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) and -1 <= value <= 1 else "must be a number in [-1, 1]"


def positive_step(value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) and value > 0 else "must be a number > 0"


class FinalStreams(Collector):
    """The last decoder layer's output at the real tokens of each batch, [tokens, d] per batch (float32 or
    wider)."""

    batch_state = ("mask",)

    def __init__(self, last: int):
        self.last = last
        self.mask: torch.Tensor | None = None
        self.streams: list[torch.Tensor] = []

    def begin_batch(self, batch: CalibrationBatch) -> None:
        self.mask = batch.real

    def layer_output(self, layer: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        if layer == self.last:
            dtype = torch.promote_types(hidden_out.dtype, torch.float32)
            self.streams.append(hidden_out[self.mask].to(dtype).cpu())


def stream_similarity(reference: list[torch.Tensor], streams: list[torch.Tensor]) -> float:
    """Mean over every token of the cosine between two models' last-layer outputs."""
    cosines = [F.cosine_similarity(a, b, dim=-1, eps=1e-12) for a, b in zip(reference, streams, strict=True)]
    return float(torch.cat(cosines).double().mean())


@options
class LaCoWalk(Scorer):
    """LaCo's selection: walk down from the top, collapse layers into the one below while the output stays
    similar; the chosen layers are the ones `--compensation laco` merges (`--method laco`)."""

    name = "laco"
    flag_prefix = "laco-walk"
    needs_count = True  # the last merge's size and the thresholds depend on how many layers go
    order_depends_on_count = True

    merge_size: int = option(4, check=merge_width,
                             help="layers per merge: the kept layer and the merge_size - 1 above it collapsed "
                                  "into it (LaCo's C; the last merge takes only the layers still needed)")
    threshold: float = option(0.65, check=cosine_threshold,
                              help="a merge is kept when the last layer's output keeps at least this mean cosine "
                                   "with the unpruned model's (LaCo's T)")
    threshold_step: float = option(0.05, check=positive_step,
                                   help="a walk that ends short lowers the threshold by this and walks again")
    samples: int = option(16, check=positive_int,
                          help="calibration samples the similarity is measured on (whole batches, at least "
                               "this many; LaCo uses a few)")

    def rank(self, context: ScoringContext, num_remove: int) -> LayerRanking:
        adapter = context.adapter
        batches = _first_samples(context.batches, self.samples)
        last = adapter.num_layers - 1
        removable = set(context.candidates()) - {last}
        originals: dict[int, dict[str, torch.Tensor]] = {}  # kept layer -> its weights before any merge
        merges: list[dict] = []
        touched: set[int] = set()
        removed: list[int] = []
        scores = [math.nan] * adapter.num_layers
        threshold, walks, trials = self.threshold, 0, 0

        def final_streams(skip: list[int], desc: str) -> list[torch.Tensor]:
            collector = FinalStreams(last)
            capture(context.model, adapter, batches, collector, skip_layers=skip, desc=desc)
            return collector.streams

        bar = progress_bar(total=None, desc="laco walk", unit="merge", leave=False)
        try:
            reference = final_streams([], "laco: unpruned")
            while len(removed) < num_remove:
                kept = [i for i in range(adapter.num_layers) if i not in removed]
                width = min(self.merge_size, num_remove - len(removed) + 1)
                if not any(_can_merge(kept[p:p + width], removable, touched) for p in range(len(kept) - width + 1)):
                    raise self.error(
                        f"LaCo's walk can remove only {len(removed)} of {num_remove} layers with merges of "
                        f"{width} layers (each layer takes part in one merge at most): lower --laco-walk-"
                        "merge-size or the ratio")
                walks += 1
                best, kept_any = -math.inf, False
                for p in range(len(kept) - 2, -1, -1):  # from the top down
                    if len(removed) >= num_remove:
                        break
                    width = min(self.merge_size, num_remove - len(removed) + 1)
                    block = kept[p:p + width]
                    if len(block) < width or not _can_merge(block, removable, touched):
                        continue  # too near the top, not consecutive, not removable, or in a merge
                    run = RemovedRun(block[1:], block[0])
                    saved = _apply_merge(adapter, run)
                    trials += 1
                    similarity = stream_similarity(
                        reference, final_streams(sorted(removed + run.layers), f"laco: merge into {run.below}"))
                    bar.update(1)
                    if not math.isfinite(similarity):
                        _restore(adapter, run.below, saved)
                        raise self.error(f"the merge into layer {run.below} gives a non-finite last-layer output; "
                                         "load the model in float32 (--dtype)")
                    best = max(best, similarity)
                    if similarity >= threshold:
                        kept_any = True
                        originals[run.below] = saved
                        touched.update(block)
                        removed.extend(run.layers)
                        for layer in run.layers:
                            scores[layer] = similarity
                        merges.append({"into": run.below, "removed": run.layers, "similarity": similarity,
                                       "threshold": threshold})
                    else:
                        _restore(adapter, run.below, saved)
                if len(removed) < num_remove:
                    threshold = next_threshold(threshold, self.threshold_step, None if kept_any else best)
        finally:
            bar.close()
            for layer, saved in originals.items():
                _restore(adapter, layer, saved)
        details = {"merges": merges, "walks": walks, "merges_tried": trials, "final_threshold": threshold,
                   "samples": sum(b.valid.shape[0] for b in batches)}
        return LayerRanking(scores, removed, "mean cosine of the last layer's output with the unpruned model's "
                            "after the merge that removed this layer (NaN: kept); the order is LaCo's walk",
                            details)


def next_threshold(threshold: float, step: float, best: float | None) -> float:
    """The next walk's threshold: one step lower; after a walk that kept no merge (`best`: the highest similarity
    it measured), the first step at or below `best`. Such a walk leaves the model as it was, so the walks at the
    steps in between would measure the same similarities and keep nothing: skipping them changes no result."""
    threshold -= step
    while best is not None and threshold > best:
        threshold -= step
    return threshold


def _first_samples(batches: list[CalibrationBatch], count: int) -> list[CalibrationBatch]:
    """The first whole batches that hold at least `count` samples (all of them if fewer)."""
    chosen, total = [], 0
    for batch in batches:
        if total >= count:
            break
        chosen.append(batch)
        total += batch.valid.shape[0]
    return chosen


def _can_merge(block: list[int], removable: set[int], touched: set[int]) -> bool:
    """A block [r, p1, ..] can merge: consecutive original layers, p's removable, none in an earlier merge."""
    consecutive = all(b == a + 1 for a, b in itertools.pairwise(block))
    return consecutive and set(block[1:]) <= removable and not touched & set(block)


@torch.no_grad()
def _apply_merge(adapter, run: RemovedRun) -> dict[str, torch.Tensor]:
    """Write LaCo's merge of `run` into its kept layer; returns that layer's weights from before."""
    try:
        merged, _ = merged_layer(adapter, run, 1.0)
    except CompensationError as err:  # parameters that differ in shape, or a merge that overflows
        raise ScoringError(str(err)) from err
    params = layer_parameters(adapter.layers[run.below])
    saved = {name: read_weight(module, local).clone() for name, (module, local) in params.items()}
    for name, (module, local) in params.items():
        write_weight(module, local, merged[name])
    return saved


@torch.no_grad()
def _restore(adapter, layer: int, saved: dict[str, torch.Tensor]) -> None:
    for name, (module, local) in layer_parameters(adapter.layers[layer]).items():
        write_weight(module, local, saved[name])
