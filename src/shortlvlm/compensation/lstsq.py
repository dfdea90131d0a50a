"""Least-squares bridge (ReplaceMe's linear transform, docs/design.md §2.6): a d x d map merged into a writer.

For each maximal run of removed layers p1..pm with kept layer r directly below it, on the chosen
calibration tokens of the unpruned model: A = the output of r's MLP writer (`mlp.down_proj`),
X^r = the stream leaving r, X^{pm} = the stream leaving the run. Without the run, the next kept
layer would see X^r = (X^r - A) + A; the bridge asks r's MLP to write A T instead, with
T = argmin |A T - Y|^2 + lambda |T - P|^2 = (A^T A + lambda I)^-1 (A^T Y + lambda P),  Y = X^{pm} - X^r + A,
so that (X^r - A) + A T ~ X^{pm}. lambda = ridge * tr(A^T A) / d (scale-free); P = 0 is ReplaceMe's
form, P = I (`prior="identity"`, ours) pulls T toward leaving the writer as it is. Solved in float64
from streamed A^T A and A^T Y; merged offline as W <- T^T W (and b <- T^T b), so the checkpoint
keeps its architecture. Gemma 3's MLP writer is followed by a norm: refused (runs.writer_names).
`streams="sequential"` fits the runs one after another from the bottom, each on the streams of the
model with the runs below it removed and bridged (ReplaceMe's code bridges one block; this is how
several compose), at one calibration pass per run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

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
from shortlvlm.io.offload import read_weight, write_weight
from shortlvlm.models import Adapter
from shortlvlm.options import Options, option, options

STREAM_CHOICES = ("unpruned", "sequential")
PRIOR_CHOICES = ("zero", "identity")


def non_negative(value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) and value >= 0 else "must be a finite number >= 0"


@options
class LstSq(Options):
    """Least-squares bridge (ReplaceMe): a linear map per removed run, merged into the MLP writer below it."""

    name: ClassVar[str] = "lstsq"
    flag_prefix = "lstsq"
    error = CompensationError
    recorded_before: ClassVar[dict] = {"prior": "zero"}  # plans from before the option were fitted with 'zero'

    ridge: float = option(
        0.01, check=non_negative, help="ridge lambda as a fraction of tr(A^T A)/d (0: plain least squares)"
    )
    tokens: str = option(
        "all",
        choices=TOKEN_CHOICES,
        help="tokens the map is fitted on: 'all' real tokens, or TIS's 'important' ones (TIS() defaults)",
    )
    prior: str = option(
        "identity",
        choices=PRIOR_CHOICES,
        help="what the ridge pulls T toward: 'identity' (the writer as it is, so a strong ridge means no "
        "bridge; the default since 2026-12-07, chosen on smol-llava's selection split for question kinds "
        "the calibration set lacks, docs/design.md §2.6) or 'zero' (ReplaceMe's form)",
    )
    streams: str = option(
        "sequential",
        choices=STREAM_CHOICES,
        help="'unpruned': every run fitted on the unpruned model's streams (one pass); "
        "'sequential': run after run from the bottom, each on the model with the runs "
        "below it removed and bridged (one pass per run)",
    )

    def statistics_key(self) -> dict:
        """The statistics depend on the tokens and streams; on the ridge only when the bridges below a run
        shaped the streams it is fitted on (sequential)."""
        return {
            "tokens": self.tokens,
            "streams": self.streams,
            **({"ridge": self.ridge, "prior": self.prior} if self.streams == "sequential" else {}),
        }

    def measure(
        self,
        model: nn.Module,
        adapter: Adapter,
        batches: list[CalibrationBatch],
        removed: list[int],
    ) -> dict[str, torch.Tensor]:
        return measure_bridges(model, adapter, batches, removed, self)

    def apply(
        self, model: nn.Module, adapter: Adapter, removed: list[int], measured: dict[str, torch.Tensor]
    ) -> list[dict]:
        return apply_bridges(model, adapter, removed, self, measured)


class BridgeStatistics(RunStreams):
    """Streams A^T A, A^T Y, |Y|^2 and the gap energy |X^{pm} - X^r|^2 for every compensated run (float64)."""

    def __init__(self, runs: list[RemovedRun], importance: TokenImportance | None, dim: int):
        super().__init__(runs, importance)
        self.ata = {run.below: torch.zeros(dim, dim, dtype=torch.float64) for run in self.runs}
        self.aty = {run.below: torch.zeros(dim, dim, dtype=torch.float64) for run in self.runs}
        self.yty = {run.below: torch.zeros((), dtype=torch.float64) for run in self.runs}
        self.gap = {run.below: torch.zeros((), dtype=torch.float64) for run in self.runs}

    def end_batch(self) -> None:
        mask = self.selected_tokens()
        for run in self.runs:
            below = run.below
            start = self.outputs[below][mask].double()
            gap = self.outputs[run.layers[-1]][mask].double() - start
            written = self.writer_outputs[below][mask].double()
            target = gap + written
            self.ata[below] += (written.T @ written).cpu()
            self.aty[below] += (written.T @ target).cpu()
            self.yty[below] += (target * target).sum().cpu()
            self.gap[below] += (gap * gap).sum().cpu()
            self.tokens[below] += int(mask.sum())
        self.outputs, self.writer_outputs = {}, {}


def measure_bridges(
    model: nn.Module,
    adapter: Adapter,
    batches: list[CalibrationBatch],
    removed: list[int],
    bridge: LstSq,
) -> dict[str, torch.Tensor]:
    """Per compensated run (keyed by the kept layer r below it): "ata.{r}", "aty.{r}" (float64, d x d),
    "yty.{r}", "gap.{r}" and "tokens.{r}". One capture pass over the unpruned model, or with
    `streams="sequential"` one per run on the partly pruned model; the weights are left as they were."""
    (name,) = writer_names(adapter, "mlp", "the least-squares bridge")
    runs = removed_runs(removed)
    if bridge.streams == "unpruned":
        return _measure(model, adapter, batches, runs, name, bridge, skip=[])

    def fit(run: RemovedRun, measured: dict[str, torch.Tensor]) -> torch.Tensor | None:
        ata, aty = measured[f"ata.{run.below}"], measured[f"aty.{run.below}"]
        if int(measured[f"tokens.{run.below}"]) and torch.trace(ata) > 0:
            return solve_bridge(ata, aty, bridge.ridge, bridge.prior)
        return None

    return measure_in_order(adapter, runs, name,
                            lambda run, skip: _measure(model, adapter, batches, [run], name, bridge, skip=skip), fit)


def measure_in_order(
    adapter: Adapter,
    runs: list[RemovedRun],
    name: str,
    measure_run: Callable[[RemovedRun, list[int]], dict[str, torch.Tensor]],
    fit_run: Callable[[RemovedRun, dict[str, torch.Tensor]], torch.Tensor | None],
) -> dict[str, torch.Tensor]:
    """Sequential streams (the bridges' `streams="sequential"`): each run with a kept layer below, from the bottom,
    measured by `measure_run(run, skip)` on the model with the runs below it removed (`skip`, bypassed) and
    bridged (`fit_run`'s map merged into their writer `name`); every merged writer is restored before returning,
    so the weights are left as they were. The last run's map is not fitted here: nothing above it is measured."""
    skip = [layer for run in runs if run.below is None for layer in run.layers]
    compensated = [run for run in runs if run.below is not None]
    measured: dict[str, torch.Tensor] = {}
    originals: list[tuple[nn.Module, dict[str, torch.Tensor]]] = []
    try:
        for run in compensated:
            measured.update(measure_run(run, skip))
            if run is compensated[-1]:
                break
            writer = adapter.residual_writers(run.below)[name]
            saved = {w: read_weight(writer, w).clone() for w in ("weight", "bias") if getattr(writer, w) is not None}
            originals.append((writer, saved))
            transform = fit_run(run, measured)
            if transform is not None:
                merge_bridge(writer, transform)
            skip = [*skip, *run.layers]
    finally:
        for writer, saved in originals:
            for weight, value in saved.items():
                write_weight(writer, weight, value)
    return measured


def _measure(
    model: nn.Module,
    adapter: Adapter,
    batches: list[CalibrationBatch],
    runs: list[RemovedRun],
    name: str,
    bridge: LstSq,
    *,
    skip: list[int],
) -> dict[str, torch.Tensor]:
    """One capture pass with the `skip` layers bypassed: the statistics of `runs`."""
    hidden = adapter.config.get_text_config().hidden_size
    importance = token_tis(bridge.tokens).importance(batches, adapter.num_layers, skip)
    stats = BridgeStatistics(runs, importance, dim=hidden)
    capture_runs(model, adapter, batches, stats, name, skip=skip, desc="lstsq")
    measured = {}
    for run in stats.runs:
        below = run.below
        measured.update(
            {
                f"ata.{below}": stats.ata[below],
                f"aty.{below}": stats.aty[below],
                f"yty.{below}": stats.yty[below].reshape(1),
                f"gap.{below}": stats.gap[below].reshape(1),
                f"tokens.{below}": torch.tensor([stats.tokens[below]], dtype=torch.int64),
            }
        )
    return measured


def solve_bridge(ata: torch.Tensor, aty: torch.Tensor, ridge: float, prior: str = "zero") -> torch.Tensor:
    """argmin |A T - Y|^2 + lambda |T - P|^2 in float64, lambda = ridge * tr(A^T A) / d, P = 0 or I:
    T = (A^T A + lambda I)^-1 (A^T Y + lambda P)."""
    ata, aty = ata.double(), aty.double()
    dim = ata.shape[0]
    if ridge == 0:  # plain least squares: the pseudo-inverse, also when A^T A is singular
        return torch.linalg.lstsq(ata, aty, driver="gelsd").solution
    damping = ridge * torch.trace(ata) / dim
    eye = torch.eye(dim, dtype=torch.float64)
    return torch.linalg.solve(ata + damping * eye, aty + (damping * eye if prior == "identity" else 0))


def residual_fraction(
    transform: torch.Tensor, ata: torch.Tensor, aty: torch.Tensor, yty: torch.Tensor, gap: torch.Tensor
) -> float:
    """|A T - Y|^2 / |X^{pm} - X^r|^2: the share of the gap left after the bridge (1: as without one)."""
    left = torch.trace(transform.T @ ata @ transform) - 2 * torch.trace(transform.T @ aty) + yty.sum()
    return float(left.clamp(min=0) / gap.sum()) if gap.sum() > 0 else 0.0


def merge_bridge(linear: nn.Module, transform: torch.Tensor) -> None:
    """W <- T^T W and b <- T^T b in float64, so the writer outputs (x W^T + b) T."""
    edit_writer_rows(linear, transform.shape[0],
                     lambda current: transform.to(device=current.device, dtype=torch.float64).T @ current,
                     "the least-squares bridge")


def apply_bridges(
    model: nn.Module, adapter: Adapter, removed: list[int], bridge: LstSq, measured: dict[str, torch.Tensor]
) -> list[dict]:
    """Solve and merge the bridge of each run of `removed` with a kept layer below; a report entry per run."""
    (name,) = writer_names(adapter, "mlp", "the least-squares bridge")
    runs = removed_runs(removed)
    report = [uncompensated(run) for run in runs if run.below is None]
    for run in [run for run in runs if run.below is not None]:
        below = run.below
        ata, aty = measured[f"ata.{below}"], measured[f"aty.{below}"]
        tokens_seen = int(measured[f"tokens.{below}"].item())
        entry = {"removed": run.layers, "edited_layer": below, "writers": [name], "tokens": tokens_seen}
        if not (torch.isfinite(ata).all() and torch.isfinite(aty).all()):
            raise CompensationError(
                f"the bridge statistics of removed layers {run.layers} contain NaN/Inf; the model overflows "
                "in "
                "its dtype on the calibration set. Load it in bfloat16 or float32 (--dtype)"
            )
        if tokens_seen == 0 or torch.trace(ata) == 0:
            report.append(
                {
                    **entry,
                    "reason": "no calibration tokens selected (or the writer is silent): nothing to fit",
                }
            )
            continue
        transform = solve_bridge(ata, aty, bridge.ridge, bridge.prior)
        merge_bridge(adapter.residual_writers(below)[name], transform)
        identity = torch.eye(transform.shape[0], dtype=torch.float64)
        entry.update(
            ridge=bridge.ridge,
            gap_left=round(
                residual_fraction(transform, ata, aty, measured[f"yty.{below}"], measured[f"gap.{below}"]), 6
            ),
            distance_from_identity=round(float((transform - identity).norm() / transform.shape[0] ** 0.5), 6),
        )
        report.append(entry)
    return sorted(report, key=lambda e: e["removed"][0])
