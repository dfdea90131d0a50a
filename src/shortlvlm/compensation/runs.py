"""What every compensation works on: the runs of removed layers, and the kept layer's writers it may edit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch, capture
from shortlvlm.errors import CompensationError
from shortlvlm.importance import TIS, ImportanceAwareCollector, TokenImportance
from shortlvlm.io.offload import read_weight, write_weight
from shortlvlm.models import Adapter

WRITER_CHOICES = ("mlp", "attn", "both")
TOKEN_CHOICES = ("all", "important")  # the `tokens` option of the compensations that have one


def token_tis(tokens: str) -> TIS:
    """The TIS options a compensation's `tokens` names: TIS's important tokens (TIS() defaults) or every real one."""
    return TIS() if tokens == "important" else TIS(tokens="all")


@dataclass
class RemovedRun:
    """A maximal run of consecutive removed layers and the kept layer directly below it."""

    layers: list[int]
    below: int | None  # None: the run starts at layer 0, nothing to compensate with


def removed_runs(removed: list[int]) -> list[RemovedRun]:
    """Group removed layer indices into maximal consecutive runs."""
    runs: list[RemovedRun] = []
    for index in sorted(set(removed)):
        if runs and runs[-1].layers[-1] == index - 1:
            runs[-1].layers.append(index)
        else:
            runs.append(RemovedRun([index], index - 1 if index > 0 else None))
    return runs


def uncompensated(run: RemovedRun) -> dict:
    """The report entry of a run that starts at layer 0 (no kept layer below it to edit)."""
    return {"removed": run.layers, "edited_layer": None, "reason": "run starts at layer 0: nothing below"}


def writer_names(adapter: Adapter, writers: str, method: str = "SCP") -> list[str]:
    """Residual writers to edit: the MLP output (last), the attention output (first), or both.

    A writer followed by a norm before it joins the residual stream (Gemma 3's sandwich norms) is
    refused: a linear edit of its weight would be undone by the norm.
    """
    if writers not in WRITER_CHOICES:
        raise CompensationError(
            f"{method} writers must be one of {', '.join(WRITER_CHOICES)}, got {writers!r}"
        )
    names = list(adapter.spec.residual_writers)
    chosen = {"mlp": names[-1:], "attn": names[:1], "both": names}[writers]
    normed = [n for n in chosen if n in adapter.spec.writer_post_norms]
    if normed:
        raise CompensationError(
            f"{method} cannot be written as a weight edit for {adapter.spec.name}: '{normed[0]}' is followed "
            "by "
            f"'{adapter.spec.writer_post_norms[normed[0]]}' (a norm) before it joins the residual stream, so "
            "a linear edit of its weight would be undone by the norm. Use --compensation none for this model"
        )
    return chosen


class RunStreams(ImportanceAwareCollector):
    """Base of the compensations' collectors: per batch, the streams leaving each compensated run's kept layer
    and its last removed layer, and the summed output of the hooked writers of the kept layer."""

    batch_state = ("batch", "outputs", "writer_outputs")

    def __init__(self, runs: list[RemovedRun], importance: TokenImportance | None):
        super().__init__(importance)
        self.runs = [run for run in runs if run.below is not None]
        self.needed = {run.below for run in self.runs} | {run.layers[-1] for run in self.runs}
        self.tokens = {run.below: 0 for run in self.runs}
        self.outputs: dict[int, torch.Tensor] = {}
        self.writer_outputs: dict[int, torch.Tensor] = {}

    def begin_batch(self, batch: CalibrationBatch) -> None:
        super().begin_batch(batch)
        self.outputs, self.writer_outputs = {}, {}

    def layer_output(self, layer: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        if layer in self.needed:
            self.outputs[layer] = hidden_out

    def writer_output(self, layer: int, output: torch.Tensor) -> None:
        """Called from hooks on the hooked writers of the kept layers below the runs."""
        previous = self.writer_outputs.get(layer)
        self.writer_outputs[layer] = output if previous is None else previous + output


def capture_runs(model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], collector: RunStreams,
                 writer: str | None, *, skip: list[int], desc: str) -> None:
    """One capture pass feeding `collector` (its importance's probe layers with attention, the `skip` layers
    bypassed), with `writer` of each of its runs' kept layers hooked into `collector.writer_output` (None: none)."""
    importance = collector.importance
    probes = importance.probe_layers if importance is not None else []
    handles = [] if writer is None else [
        adapter.residual_writers(run.below)[writer].register_forward_hook(
            lambda mod, args, out, layer=run.below: collector.writer_output(layer, out))
        for run in collector.runs
    ]
    try:
        capture(model, adapter, batches, collector, attention_layers=probes, skip_layers=skip, desc=desc)
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def edit_writer_rows(linear: nn.Module, width: int, edit: Callable[[torch.Tensor], torch.Tensor], method: str) -> None:
    """Replace a residual writer's weight W (and bias b) by edit(W) (edit(b)), computed in float64 on the weight's
    device; read and written through accelerate's offload map when the module is offloaded."""
    if not isinstance(linear, nn.Linear):
        raise CompensationError(f"{method} edits nn.Linear writers; got {type(linear).__name__}")
    if linear.weight.shape[0] != width:
        raise CompensationError(
            f"writer output width {linear.weight.shape[0]} does not match the residual width {width}"
        )
    for name in ("weight", "bias"):
        if getattr(linear, name) is not None:
            write_weight(linear, name, edit(read_weight(linear, name).double()))
