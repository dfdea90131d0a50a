"""Subspace-Compensated Pruning (docs/design.md §2.3): bridge the gap a removed run of layers leaves.

For each maximal run of removed layers p1..pm with kept layer r directly below it, H stacks
X^{pm} - X^{r} (the residual stream after the run minus after r, unpruned model, on the
important tokens of the calibration set). V_k = top-k right singular vectors of H, taken as the
top-k eigenvectors of the streamed H^T H (float64). Each edited residual writer W of layer r
becomes (I + alpha V_k V_k^T) W (its bias likewise), so the kept layer writes more along the
directions the removed layers used to add. Weights change; the architecture does not.
`alpha="fit"` (an extension) picks alpha by least squares: argmin sum_t |H_t - alpha P u_t|^2,
u_t the edited writers' output, P = V_k V_k^T; it needs two more d x d accumulators per run.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch, capture
from shortlvlm.compensation.runs import (
    WRITER_CHOICES,
    RemovedRun,
    RunStreams,
    edit_writer_rows,
    removed_runs,
    uncompensated,
    writer_names,
)
from shortlvlm.errors import CompensationError
from shortlvlm.importance import TIS, TokenImportance
from shortlvlm.models import Adapter
from shortlvlm.options import Options, finite_or, is_bool, option, options, positive_int


def parse_alpha(text: str) -> float | str:
    """A number, or 'fit'."""
    if text == "fit":
        return "fit"
    try:
        return float(text)
    except ValueError:
        raise ValueError("takes a number or 'fit'") from None


@options
class SCP(Options):
    """Subspace-Compensated Pruning: how the kept layer below each removed run is edited."""

    name: ClassVar[str] = "scp"
    flag_prefix = "scp"
    error = CompensationError

    rank: int = option(8, check=positive_int, help="directions k of the gap subspace")
    alpha: float | str = option(1.0, parse=parse_alpha, check=finite_or("fit"),
                                help="edit strength, or 'fit' for least squares")
    writers: str = option("mlp", choices=WRITER_CHOICES, help="which projections of the kept layer are edited")
    tis: TIS | None = option(None, flag=None,
                             help="tokens the gap is measured on; None: the scorer's (its TIS for tis-cosine, "
                                  "every real token otherwise)")
    normalize: bool = option(False, flag=None, check=is_bool,
                             help="weigh each token's gap by 1/|X^r_t| (an experiment; the paper's form is off)")

    @property
    def fit(self) -> bool:
        return self.alpha == "fit"

    def statistics_key(self) -> dict:
        """What the measured statistics depend on: the tokens, normalisation, and for a fitted alpha the
        writers whose outputs were accumulated (not the rank, not a numeric alpha)."""
        return {"tis": self.tis.to_dict() if self.tis is not None else None, "normalize": self.normalize,
                "fit": self.fit, "writers": self.writers if self.fit else None}

    def measure(self, model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch],
                removed: list[int]) -> dict[str, torch.Tensor]:
        return measure_gaps(model, adapter, batches, removed, self)

    def apply(self, model: nn.Module, adapter: Adapter, removed: list[int],
              measured: dict[str, torch.Tensor]) -> list[dict]:
        return apply_scp(model, adapter, removed, self, measured)


class GapStatistics(RunStreams):
    """Streams H^T H (and, for alpha="fit", sum u H^T and sum u u^T) for every compensated run."""

    def __init__(self, runs: list[RemovedRun], importance: TokenImportance | None, fit: bool, dim: int,
                 normalize: bool = False):
        super().__init__(runs, importance)
        self.normalize = normalize
        self.fit = fit
        zeros = lambda: torch.zeros(dim, dim, dtype=torch.float64)  # noqa: E731
        self.hth = {run.below: zeros() for run in self.runs}
        self.cross = {run.below: zeros() for run in self.runs} if fit else {}
        self.gram = {run.below: zeros() for run in self.runs} if fit else {}

    def end_batch(self) -> None:
        mask = self.selected_tokens()
        for run in self.runs:
            below, after = self.outputs[run.below], self.outputs[run.layers[-1]]
            dtype = torch.promote_types(below.dtype, torch.float32)
            gap = after[mask].to(dtype) - below[mask].to(dtype)
            # Per-token weight 1/|X^r_t|: the next layer sees the stream through an RMS norm, so a
            # gap matters relative to its token's norm; without it a few huge-norm tokens dominate.
            scale = 1 / below[mask].to(dtype).norm(dim=-1, keepdim=True).clamp(min=1e-12) if self.normalize else 1.0
            gap = gap * scale
            self.hth[run.below] += (gap.T @ gap).double().cpu()
            self.tokens[run.below] += gap.shape[0]
            if self.fit:
                written = self.writer_outputs[run.below][mask].to(dtype) * scale
                self.cross[run.below] += (written.T @ gap).double().cpu()
                self.gram[run.below] += (written.T @ written).double().cpu()
        self.outputs, self.writer_outputs = {}, {}


def top_subspace(hth: torch.Tensor, rank: int, rel_tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_k [d, k'], eigenvalues [k']) of a PSD H^T H; k' < k when H has lower rank."""
    values, vectors = torch.linalg.eigh(hth.double())
    values, vectors = values.flip(0), vectors.flip(1)
    keep = min(rank, int((values > rel_tol * values[0].clamp(min=1e-300)).sum()))
    return vectors[:, :keep], values[:keep]


def edit_writer(linear: nn.Module, basis: torch.Tensor, alpha: float) -> None:
    """W <- (I + alpha V V^T) W and b <- (I + alpha V V^T) b, computed in float64."""
    def edit(current: torch.Tensor) -> torch.Tensor:
        here = basis.to(device=current.device, dtype=torch.float64)
        return current + alpha * here @ (here.T @ current)
    edit_writer_rows(linear, basis.shape[0], edit, "SCP")


def fit_alpha(basis: torch.Tensor, cross: torch.Tensor, gram: torch.Tensor) -> float:
    """Least-squares alpha: tr(V^T C V) / tr(V^T G V) with C = sum u H^T, G = sum u u^T."""
    numerator = torch.trace(basis.T @ cross @ basis)
    denominator = torch.trace(basis.T @ gram @ basis)
    return float(numerator / denominator) if denominator > 0 else 0.0


def measure_gaps(model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], removed: list[int],
                 scp: SCP) -> dict[str, torch.Tensor]:
    """One capture pass over the unpruned model: per compensated run (keyed by the kept layer below),
    "hth.{r}" (and "cross.{r}", "gram.{r}" when fitting alpha) in float64 and "tokens.{r}"."""
    tis = scp.tis or TIS()
    names = writer_names(adapter, scp.writers)
    hidden = adapter.config.get_text_config().hidden_size
    importance = tis.importance(batches, adapter.num_layers)
    probes = importance.probe_layers if importance is not None else []
    stats = GapStatistics(removed_runs(removed), importance, fit=scp.fit, dim=hidden, normalize=scp.normalize)
    handles = []
    if scp.fit:
        for run in stats.runs:
            for name, module in adapter.residual_writers(run.below).items():
                if name in names:
                    handles.append(module.register_forward_hook(
                        lambda mod, args, out, layer=run.below: stats.writer_output(layer, out)))
    try:
        capture(model, adapter, batches, stats, attention_layers=probes, desc="scp")
    finally:
        for handle in handles:
            handle.remove()
    measured = {}
    for run in stats.runs:
        measured[f"hth.{run.below}"] = stats.hth[run.below]
        measured[f"tokens.{run.below}"] = torch.tensor([stats.tokens[run.below]], dtype=torch.int64)
        if scp.fit:
            measured[f"cross.{run.below}"] = stats.cross[run.below]
            measured[f"gram.{run.below}"] = stats.gram[run.below]
    return measured


def apply_scp(model: nn.Module, adapter: Adapter, removed: list[int], scp: SCP,
              measured: dict[str, torch.Tensor]) -> list[dict]:
    """Edit the kept layer below each run of `removed` with its measured gap subspace; one report entry per run."""
    names = writer_names(adapter, scp.writers)
    runs = removed_runs(removed)
    report = [uncompensated(run) for run in runs if run.below is None]
    for run in [run for run in runs if run.below is not None]:
        below = run.below
        hth, tokens_seen = measured[f"hth.{below}"], int(measured[f"tokens.{below}"].item())
        entry = {"removed": run.layers, "edited_layer": below, "writers": names, "tokens": tokens_seen}
        if not torch.isfinite(hth).all():
            raise CompensationError(
                f"the gap statistics of removed layers {run.layers} contain NaN/Inf; the model overflows in "
                "its dtype on the calibration set. Load it in bfloat16 or float32 (--dtype)"
            )
        if tokens_seen == 0:
            report.append({**entry, "reason": "no calibration tokens selected"})
            continue
        basis, values = top_subspace(hth, scp.rank)
        if basis.shape[1] == 0:
            # H = 0: the removed layers changed nothing on these tokens, so there is no gap to bridge.
            report.append({**entry, "rank": 0, "reason": "the removed layers leave no gap (H = 0): nothing to edit"})
            continue
        run_alpha = (fit_alpha(basis, measured[f"cross.{below}"], measured[f"gram.{below}"]) if scp.fit
                     else float(scp.alpha))
        for name, module in adapter.residual_writers(below).items():
            if name in names:
                edit_writer(module, basis, run_alpha)
        energy = float(values.sum() / torch.trace(hth))
        entry.update(rank=basis.shape[1], alpha=run_alpha, energy_captured=round(energy, 6))
        if basis.shape[1] < scp.rank:
            entry["note"] = f"H has rank {basis.shape[1]} < requested {scp.rank}; used {basis.shape[1]} directions"
        report.append(entry)
    return sorted(report, key=lambda e: e["removed"][0])
