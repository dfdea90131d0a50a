"""Magnitude compensation (Prune&Comp, AAAI 2026; docs/design.md §2.6.1): close the magnitude gap a removed run leaves.

For each maximal run of removed layers p1..pm with kept layer r directly below it, on the chosen
calibration tokens of the unpruned model, X^r = the stream leaving r and X^{pm} = the stream leaving
the run. The factor is the authors' estimate: per calibration sample and channel c, the mean of
|X^{pm}_c| over the sample's tokens divided by the mean of |X^r_c|, averaged over samples, then over
channels (s > 1: the run made the stream larger). Streamed in float64 in one capture pass.

Prune&Comp multiplies the stream below the cut by s (the embedding and every residual writer up to r).
In a pre-norm decoder every reader of the stream (each layer's input norm, the final norm) is
scale-invariant, so that is the same model as multiplying every residual writer *above* the cut by 1/s
(up to the norms' epsilon), which is what we merge: a VLM's stream entering layer 0 is not one weight
(text embeddings, projected image features, Qwen3-VL's deepstack additions), and a tied embedding is
also the output head. Several runs compose: a writer carries 1/s of every run below it. A run with no
kept layer above needs no edit (the final norm undoes a rescaling). Every residual writer of a layer is
scaled, so Gemma 3, whose writers are followed by a norm, is refused (runs.writer_names).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation.runs import (
    TOKEN_CHOICES,
    RemovedRun,
    RunStreams,
    capture_runs,
    edit_writer_rows,
    removed_runs,
    token_tis,
    uncompensated,
    writer_names,
)
from shortlvlm.errors import CompensationError
from shortlvlm.importance import TokenImportance
from shortlvlm.models import Adapter
from shortlvlm.options import Options, option, options

METHOD = "magnitude compensation"


@options
class Magnitude(Options):
    """Magnitude compensation (Prune&Comp): the stream below each removed run rescaled to its magnitude above it."""

    name: ClassVar[str] = "magnitude"
    flag_prefix = "magnitude"
    error = CompensationError

    tokens: str = option(
        "all",
        choices=TOKEN_CHOICES,
        help="tokens the magnitude gap is estimated on: 'all' real tokens (as Prune&Comp), or TIS's 'important' "
        "ones (TIS() defaults)",
    )

    def statistics_key(self) -> dict:
        """The statistics depend on the tokens only."""
        return {"tokens": self.tokens}

    def measure(
        self, model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], removed: list[int]
    ) -> dict[str, torch.Tensor]:
        return measure_magnitudes(model, adapter, batches, removed, self)

    def apply(
        self, model: nn.Module, adapter: Adapter, removed: list[int], measured: dict[str, torch.Tensor]
    ) -> list[dict]:
        return apply_magnitudes(model, adapter, removed, measured)


class MagnitudeStatistics(RunStreams):
    """Per compensated run: the sum over samples of the per-channel ratio mean|X^{pm}| / mean|X^r| (float64)."""

    def __init__(self, runs: list[RemovedRun], importance: TokenImportance | None, dim: int):
        super().__init__(runs, importance)
        self.ratio = {run.below: torch.zeros(dim, dtype=torch.float64) for run in self.runs}
        self.samples = {run.below: 0 for run in self.runs}

    def end_batch(self) -> None:
        mask = self.selected_tokens()
        counted = mask.any(dim=1)  # samples with no selected token give no ratio
        for run in self.runs:
            below = run.below
            start = _channel_sums(self.outputs[below], mask)[counted]
            end = _channel_sums(self.outputs[run.layers[-1]], mask)[counted]
            self.ratio[below] += (end / start).sum(dim=0).cpu()  # token counts cancel in the ratio of means
            self.samples[below] += int(counted.sum())
            self.tokens[below] += int(mask.sum())
        self.outputs, self.writer_outputs = {}, {}


def _channel_sums(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, d] sum of |hidden| over each sample's selected tokens, in float64."""
    selected = torch.where(mask.to(hidden.device).unsqueeze(-1), hidden.double().abs(), 0.0)
    return selected.sum(dim=1)


def measure_magnitudes(
    model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], removed: list[int], magnitude: Magnitude
) -> dict[str, torch.Tensor]:
    """Per compensated run (keyed by the kept layer r below it): "ratio.{r}" (float64, d), "samples.{r}" and
    "tokens.{r}". One capture pass over the unpruned model; the weights are left as they were."""
    writer_names(adapter, "both", METHOD)
    runs = removed_runs(removed)
    hidden = adapter.config.get_text_config().hidden_size
    importance = token_tis(magnitude.tokens).importance(batches, adapter.num_layers, [])
    stats = MagnitudeStatistics(runs, importance, dim=hidden)
    if stats.runs:
        capture_runs(model, adapter, batches, stats, None, skip=[], desc="magnitude")
    measured = {}
    for run in stats.runs:
        below = run.below
        measured.update(
            {
                f"ratio.{below}": stats.ratio[below],
                f"samples.{below}": torch.tensor([stats.samples[below]], dtype=torch.int64),
                f"tokens.{below}": torch.tensor([stats.tokens[below]], dtype=torch.int64),
            }
        )
    return measured


def magnitude_factor(measured: dict[str, torch.Tensor], below: int) -> float:
    """s = the per-channel ratios averaged over samples, then over channels (1.0 without samples)."""
    samples = int(measured[f"samples.{below}"].item())
    return float(measured[f"ratio.{below}"].mean() / samples) if samples else 1.0


def apply_magnitudes(
    model: nn.Module, adapter: Adapter, removed: list[int], measured: dict[str, torch.Tensor]
) -> list[dict]:
    """Merge 1/s of every run below into each kept layer's residual writers; a report entry per run."""
    names = writer_names(adapter, "both", METHOD)
    runs = removed_runs(removed)
    kept = [layer for layer in range(adapter.num_layers) if layer not in set(removed)]
    report = [uncompensated(run) for run in runs if run.below is None]
    factors: dict[int, float] = {}  # last removed layer of a run -> s
    for run in [run for run in runs if run.below is not None]:
        below = run.below
        samples = int(measured[f"samples.{below}"].item())
        factor = magnitude_factor(measured, below)
        if not (torch.isfinite(measured[f"ratio.{below}"]).all() and math.isfinite(factor) and factor > 0):
            raise CompensationError(
                f"the magnitude statistics of removed layers {run.layers} contain NaN/Inf (or no positive factor); "
                "the model overflows in its dtype on the calibration set. Load it in bfloat16 or float32 (--dtype)"
            )
        above = [layer for layer in kept if layer > run.layers[-1]]
        entry = {
            "removed": run.layers,
            "edited_layer": above[0] if above else None,
            "edited_layers": above,
            "writers": names,
            "factor": round(factor, 6),
            "tokens": int(measured[f"tokens.{below}"].item()),
            "samples": samples,
        }
        if samples == 0:
            entry["reason"] = "no calibration tokens selected: nothing to estimate"
        elif not above:
            entry["reason"] = "no kept layer above: the final norm undoes a rescaling, nothing to edit"
        else:
            factors[run.layers[-1]] = factor
        report.append(entry)
    hidden = adapter.config.get_text_config().hidden_size
    for layer in kept:
        scale = math.prod(1 / factor for last, factor in factors.items() if last < layer)
        if scale != 1.0:
            writers = adapter.residual_writers(layer)
            for name in names:
                edit_writer_rows(writers[name], hidden, lambda current, scale=scale: current * scale, METHOD)
    return sorted(report, key=lambda e: e["removed"][0])
