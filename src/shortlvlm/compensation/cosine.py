"""Cosine bridge (ReplaceMe's second objective, docs/design.md §2.6.2): a d x d map fitted by Adam, merged as LstSq's.

For each maximal run of removed layers p1..pm with kept layer r directly below it: A = the output of r's
MLP writer, R = X^r - A (the rest of the stream leaving r), X = X^{pm} (the stream leaving the run). The
bridge asks r's MLP to write A T instead of A, with T minimising the mean over the stored tokens of the
cosine distance 1 - cos(R + A T, X) (ReplaceMe's `accurate` form: the whole stream enters the cosine).
Adam from T0 = I (ReplaceMe's start) or the least-squares bridge, `steps` full-batch steps in float32 on
the CPU. Unlike LstSq, which streams d x d Gram matrices, the fit needs the tokens themselves: at most
`max_tokens` per run are kept (a uniform sample drawn as the batches stream past: each token gets a
seeded random key and the smallest keys stay), so memory is bounded by max_tokens x d x 3 float32 per run.
Merged offline as W <- T^T W (lstsq.merge_bridge); Gemma 3's post-norm writers are refused.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation.lstsq import STREAM_CHOICES, LstSq, measure_in_order, merge_bridge, solve_bridge
from shortlvlm.compensation.runs import (
    TOKEN_CHOICES,
    RemovedRun,
    RunStreams,
    capture_runs,
    removed_runs,
    token_tis,
    uncompensated,
    writer_names,
)
from shortlvlm.errors import CompensationError
from shortlvlm.importance import TokenImportance
from shortlvlm.models import Adapter
from shortlvlm.options import Options, non_negative_int, option, options, positive_int

INIT_CHOICES = ("identity", "lstsq")
MAX_STEPS = 10_000
PARTS = ("written", "rest", "target")  # A, X^r - A and X^{pm} of the stored tokens
METHOD = "the cosine bridge"


def bounded_steps(value: Any) -> str | None:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return None if whole and 1 <= value <= MAX_STEPS else f"must be an integer from 1 to {MAX_STEPS}"


def positive_finite(value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) and value > 0 else "must be a finite number > 0"


@options
class Cosine(Options):
    """Cosine bridge (ReplaceMe's cosine objective): a map per removed run, fitted by Adam, merged into the MLP
    writer below it. Starts from the identity by default, as ReplaceMe does."""

    name: ClassVar[str] = "cosine"
    flag_prefix = "cosine"
    error = CompensationError

    steps: int = option(200, check=bounded_steps, help=f"Adam steps on all stored tokens (1 to {MAX_STEPS})")
    lr: float = option(1e-3, check=positive_finite, help="Adam's learning rate (ReplaceMe: 1e-4 over many more steps)")
    init: str = option(
        "identity",
        choices=INIT_CHOICES,
        help="starting map: 'identity' (ReplaceMe's: the writer as it is) or 'lstsq' (the least-squares bridge, "
        "LstSq's default ridge)",
    )
    tokens: str = option(
        "all",
        choices=TOKEN_CHOICES,
        help="tokens the map is fitted on: 'all' real tokens, or TIS's 'important' ones (TIS() defaults)",
    )
    max_tokens: int = option(
        4096,
        check=positive_int,
        help="calibration tokens stored per run for the fit (a seeded uniform sample); memory: "
        "max_tokens x hidden size x 3 float32 per run",
    )
    streams: str = option(
        "sequential",
        choices=STREAM_CHOICES,
        help="'unpruned': every run fitted on the unpruned model's streams (one pass); "
        "'sequential': run after run from the bottom, each on the model with the runs "
        "below it removed and bridged (one pass per run)",
    )
    seed: int = option(0, check=non_negative_int, help="seed of the token sample")

    def statistics_key(self) -> dict:
        """The stored tokens depend on the tokens, streams, sample size and seed; with sequential streams also on
        the fit (it shaped the streams above a bridged run, and the fitted maps are stored with them)."""
        fit = {"steps": self.steps, "lr": self.lr, "init": self.init} if self.streams == "sequential" else {}
        return {"tokens": self.tokens, "streams": self.streams, "max_tokens": self.max_tokens, "seed": self.seed,
                **fit}

    def measure(
        self, model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], removed: list[int]
    ) -> dict[str, torch.Tensor]:
        return measure_cosine(model, adapter, batches, removed, self)

    def apply(
        self, model: nn.Module, adapter: Adapter, removed: list[int], measured: dict[str, torch.Tensor]
    ) -> list[dict]:
        return apply_cosine(model, adapter, removed, self, measured)


class TokenSample(RunStreams):
    """Keeps, per compensated run, up to `limit` selected tokens' A, X^r - A and X^{pm} (float32, CPU): a
    uniform sample, the tokens with the smallest seeded random keys, in the order they came."""

    def __init__(self, runs: list[RemovedRun], importance: TokenImportance | None, limit: int, seed: int):
        super().__init__(runs, importance)
        self.limit = limit
        self.generator = torch.Generator().manual_seed(seed)
        self.keys = {run.below: torch.empty(0) for run in self.runs}
        self.kept: dict[int, list[torch.Tensor]] = {run.below: [] for run in self.runs}

    def end_batch(self) -> None:
        mask = self.selected_tokens()
        keys = torch.rand(int(mask.sum()), generator=self.generator)  # one key per token, shared by the runs
        for run in self.runs:
            below = run.below
            written = self.writer_outputs[below][mask].float().cpu()
            rest = self.outputs[below][mask].float().cpu() - written
            target = self.outputs[run.layers[-1]][mask].float().cpu()
            new = [written, rest, target]
            merged_keys = torch.cat([self.keys[below], keys])
            old = self.kept[below]
            merged = [torch.cat([before, part]) for before, part in zip(old, new, strict=True)] if old else new
            if len(merged_keys) > self.limit:
                order = torch.sort(merged_keys, stable=True).indices[: self.limit].sort().values
                merged_keys, merged = merged_keys[order], [part[order] for part in merged]
            self.keys[below], self.kept[below] = merged_keys, merged
            self.tokens[below] += int(mask.sum())
        self.outputs, self.writer_outputs = {}, {}


def measure_cosine(
    model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], removed: list[int], bridge: Cosine
) -> dict[str, torch.Tensor]:
    """Per compensated run (keyed by the kept layer r below it): "written.{r}" (A), "rest.{r}" (X^r - A),
    "target.{r}" (X^{pm}), each [n, d] float32 with n <= max_tokens, and "tokens.{r}" (tokens seen). With
    `streams="sequential"`, one pass per run on the partly pruned model, and "transform.{r}" for every run
    below the last (the map that bridged it while the runs above were measured); the weights are left as
    they were."""
    (name,) = writer_names(adapter, "mlp", METHOD)
    runs = removed_runs(removed)
    if bridge.streams == "unpruned":
        return _measure(model, adapter, batches, runs, name, bridge, skip=[])
    def fit(run: RemovedRun, measured: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not (len(measured[f"written.{run.below}"]) and measured[f"written.{run.below}"].abs().sum() > 0):
            return None
        transform = fit_cosine(*[measured[f"{key}.{run.below}"] for key in PARTS], bridge, run.layers)
        measured[f"transform.{run.below}"] = transform  # saved with the tokens: each run is fitted once
        return transform

    return measure_in_order(adapter, runs, name,
                            lambda run, skip: _measure(model, adapter, batches, [run], name, bridge, skip=skip), fit)


def _measure(
    model: nn.Module,
    adapter: Adapter,
    batches: list[CalibrationBatch],
    runs: list[RemovedRun],
    name: str,
    bridge: Cosine,
    *,
    skip: list[int],
) -> dict[str, torch.Tensor]:
    """One capture pass with the `skip` layers bypassed: the token sample of `runs`."""
    importance = token_tis(bridge.tokens).importance(batches, adapter.num_layers, skip)
    sample = TokenSample(runs, importance, bridge.max_tokens, bridge.seed)
    capture_runs(model, adapter, batches, sample, name, skip=skip, desc="cosine")
    hidden = adapter.config.get_text_config().hidden_size
    measured = {}
    for run in sample.runs:
        below, kept = run.below, sample.kept[run.below]
        with torch.inference_mode(False):  # ordinary tensors, as LstSq's: autograd and the caller may use them
            parts = [part.clone() for part in kept] if kept else [torch.zeros(0, hidden) for _ in PARTS]
        measured.update({f"{key}.{below}": part for key, part in zip(PARTS, parts, strict=True)})
        measured[f"tokens.{below}"] = torch.tensor([sample.tokens[below]], dtype=torch.int64)
    return measured


def cosine_distance(written: torch.Tensor, rest: torch.Tensor, target: torch.Tensor,
                    transform: torch.Tensor) -> torch.Tensor:
    """mean_t 1 - cos(rest_t + written_t T, target_t)."""
    bridged = rest + written @ transform
    return 1 - torch.nn.functional.cosine_similarity(bridged, target, dim=1, eps=1e-30).mean()


def checked_tokens(written: torch.Tensor, rest: torch.Tensor, target: torch.Tensor,
                   removed: list[int]) -> list[torch.Tensor]:
    """A run's stored tokens as float32 CPU tensors autograd can use (inference tensors copied), NaN/Inf refused."""
    with torch.inference_mode(False):
        parts = [part.detach().to("cpu", torch.float32) for part in (written, rest, target)]
        parts = [part.clone() if part.is_inference() else part for part in parts]
    if not all(torch.isfinite(part).all() for part in parts):
        raise CompensationError(
            f"the cosine bridge's tokens of removed layers {removed} contain NaN/Inf; the model overflows in its "
            "dtype on the calibration set. Load it in bfloat16 or float32 (--dtype)"
        )
    return parts


def start_map(written: torch.Tensor, rest: torch.Tensor, target: torch.Tensor, init: str) -> torch.Tensor:
    """T0 in float64: the identity, or the least-squares bridge on the stored tokens (LstSq's default ridge)."""
    if init == "identity":
        return torch.eye(written.shape[1], dtype=torch.float64)
    a, y = written.double(), (target - rest).double()  # Y = X^{pm} - X^r + A, as LstSq's
    return solve_bridge(a.T @ a, a.T @ y, LstSq().ridge)


def fit_cosine(written: torch.Tensor, rest: torch.Tensor, target: torch.Tensor, bridge: Cosine,
               removed: list[int]) -> torch.Tensor:
    """T (float64) after `bridge.steps` full-batch Adam steps in float32 on the CPU, from `start_map`."""
    written, rest, target = checked_tokens(written, rest, target, removed)
    with torch.inference_mode(False), torch.enable_grad():
        transform = start_map(written, rest, target, bridge.init).float().requires_grad_(True)
        optimizer = torch.optim.Adam([transform], lr=bridge.lr)
        for step in range(bridge.steps):
            optimizer.zero_grad()
            loss = cosine_distance(written, rest, target, transform)
            if not torch.isfinite(loss):
                raise CompensationError(
                    f"the cosine bridge of removed layers {removed} reached a NaN/Inf distance after {step} steps; "
                    "lower --cosine-lr or start from --cosine-init lstsq"
                )
            loss.backward()
            optimizer.step()
    return transform.detach().double()


def apply_cosine(
    model: nn.Module, adapter: Adapter, removed: list[int], bridge: Cosine, measured: dict[str, torch.Tensor]
) -> list[dict]:
    """Fit (or take the sequential pass's fitted map) and merge the bridge of each run of `removed` with a kept
    layer below; a report entry per run. Every map is fitted and checked before any weight is edited."""
    (name,) = writer_names(adapter, "mlp", METHOD)
    runs = removed_runs(removed)
    report = [uncompensated(run) for run in runs if run.below is None]
    transforms = {}
    for run in [run for run in runs if run.below is not None]:
        below = run.below
        tokens = checked_tokens(*(measured[f"{key}.{below}"] for key in PARTS), run.layers)
        entry = {"removed": run.layers, "edited_layer": below, "writers": [name], "tokens": len(tokens[0]),
                 "tokens_seen": int(measured[f"tokens.{below}"].item())}
        if len(tokens[0]) == 0 or tokens[0].abs().sum() == 0:
            reason = "no calibration tokens selected (or the writer is silent): nothing to fit"
            report.append({**entry, "reason": reason})
            continue
        transform = measured.get(f"transform.{below}")
        transform = fit_cosine(*tokens, bridge, run.layers) if transform is None else transform.double()
        transforms[below] = transform
        tokens64 = [part.double() for part in tokens]
        identity = torch.eye(len(transform), dtype=torch.float64)
        distance = {
            when: round(float(cosine_distance(*tokens64, value)), 6)
            for when, value in (("before", identity), ("start", start_map(*tokens64, bridge.init)),
                                ("after", transform))
        }
        entry.update(
            steps=bridge.steps, lr=bridge.lr, init=bridge.init,
            cosine_distance_before=distance["before"],
            cosine_distance_start=distance["start"],
            cosine_distance_after=distance["after"],
            distance_from_identity=round(float((transform - identity).norm() / len(transform) ** 0.5), 6),
        )
        report.append(entry)
    for below, transform in transforms.items():
        merge_bridge(adapter.residual_writers(below)[name], transform)
    return sorted(report, key=lambda e: e["removed"][0])
