"""LaCo's layer merge (Yang et al. 2024, "LaCo: Large Language Model Pruning via Layer Collapse"; design.md §2.6.3).

For each maximal run of removed layers p1..pm with kept layer r directly below it, every parameter tensor of
r (attention, MLP, norms, biases) absorbs the run's differences from it:

    θ_r <- θ_r + scale * Σ_k (θ_{p_k} - θ_r)

(scale 1 is LaCo's "reserving differences while seeking common" merge), computed in float64 and written back
in the parameter's dtype. The merged layer has r's architecture, so the pruned checkpoint stays standard.

What the paper adds beyond the merge: its own layer selection, which walks down from the top of the model,
merges a candidate block into the layer below it, and keeps the merge only when the merged model's
representations on a few calibration sentences stay similar to the original's above a threshold (else it
moves on). Here the merge is a compensation only: it pairs with whichever of our selections chose the
layers, and needs no calibration data (`needs_data = False`: no capture pass, no `--calib`).

It is not a linear edit of a residual writer fitted to reproduce a stream, so a norm after a writer (Gemma 3's
sandwich norms) undoes nothing: the norms' own weights are merged like every other parameter, and nothing is
refused for it. Layers whose types differ in the config (Gemma 3's sliding-window and global attention, listed
in `layer_types`) are merged all the same, as LaCo does not distinguish them; the merged layer keeps r's type,
and the run's report entry lists the types when they differ.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation.runs import RemovedRun, removed_runs, uncompensated
from shortlvlm.errors import CompensationError
from shortlvlm.io.offload import read_weight, write_weight
from shortlvlm.models import Adapter
from shortlvlm.options import Options, option, options


def finite_number(value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and math.isfinite(value) else "must be a finite number"


@options
class LaCo(Options):
    """LaCo's layer merge: each run of removed layers is collapsed into the kept layer below it by adding their
    parameter differences. Needs no calibration data."""

    name: ClassVar[str] = "laco"
    flag_prefix = "laco"
    error = CompensationError
    needs_data: ClassVar[bool] = False  # no capture pass: prune reads no calibration set for it

    scale: float = option(
        1.0, check=finite_number,
        help="factor on the added differences sum_k (theta_pk - theta_r) (1: LaCo's merge; 0: no edit)",
    )

    def measure(
        self, model: nn.Module, adapter: Adapter, batches: list[CalibrationBatch], removed: list[int]
    ) -> dict[str, torch.Tensor]:
        """Nothing to measure: the merge reads only weights."""
        return {}

    def apply(
        self, model: nn.Module, adapter: Adapter, removed: list[int], measured: dict[str, torch.Tensor]
    ) -> list[dict]:
        return merge_runs(adapter, removed, self)


def layer_parameters(layer: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """{dotted parameter name: (module holding it, its attribute name)} of a decoder layer."""
    return {
        f"{prefix}.{local}" if prefix else local: (module, local)
        for prefix, module in layer.named_modules()
        for local, _ in module.named_parameters(recurse=False)
    }


def layer_type_differences(adapter: Adapter, run: RemovedRun) -> dict[str, list]:
    """{per-layer config field: [value of r, of p1, ..., of pm]} for the fields whose values differ in the run."""
    layers = [run.below, *run.layers]
    found: dict[str, list] = {}
    for config in adapter.text_configs():
        for field in adapter.per_layer_fields(config):
            values = getattr(config, field)
            if field not in found and len(values) == adapter.num_layers:
                found[field] = [values[i] for i in layers]
    return {field: values for field, values in found.items() if len(set(map(str, values))) > 1}


@torch.no_grad()
def merged_layer(adapter: Adapter, run: RemovedRun, scale: float) -> tuple[dict[str, torch.Tensor], dict]:
    """The merged tensors of r (in each parameter's dtype, checked finite) and the run's report entry."""
    kept = layer_parameters(adapter.layers[run.below])
    shapes = {name: tuple(module.get_parameter(local).shape) for name, (module, local) in kept.items()}
    sources = [layer_parameters(adapter.layers[index]) for index in run.layers]
    for index, other in zip(run.layers, sources, strict=True):
        other_shapes = {name: tuple(module.get_parameter(local).shape) for name, (module, local) in other.items()}
        if other_shapes != shapes:
            problem = sorted(set(shapes) ^ set(other_shapes)) + sorted(
                n for n in set(shapes) & set(other_shapes) if shapes[n] != other_shapes[n])
            raise CompensationError(
                f"LaCo cannot merge layer {index} into layer {run.below}: their parameters differ in names or "
                f"shapes ({', '.join(problem[:3])}); use another --compensation for this model"
            )
    merged: dict[str, torch.Tensor] = {}
    change, size = 0.0, 0.0
    for name, (module, local) in kept.items():
        value = read_weight(module, local)
        base = value.double()
        differences = torch.zeros_like(base)
        for other in sources:
            source, source_local = other[name]
            differences += read_weight(source, source_local).to(base.device, torch.float64) - base
        delta = scale * differences
        result = (base + delta).to(value.dtype)
        if not torch.isfinite(result).all():
            raise CompensationError(
                f"LaCo's merge of layers {run.layers} into layer {run.below} gives NaN/Inf in '{name}' in "
                f"{str(value.dtype).removeprefix('torch.')}; load the model in float32 (--dtype) or lower --laco-scale"
            )
        merged[name] = result
        change += float(delta.pow(2).sum())
        size += float(base.pow(2).sum())
    entry = {
        "removed": run.layers, "edited_layer": run.below, "scale": scale, "parameters": len(merged),
        "elements": sum(t.numel() for t in merged.values()),
        # |delta theta| / |theta_r| over all of r's parameters; None for an all-zero layer r
        "relative_change": round(math.sqrt(change / size), 6) if size > 0 else None,
    }
    differing = layer_type_differences(adapter, run)
    if differing:
        entry["layer_types_differ"] = differing
    return merged, entry


def merge_runs(adapter: Adapter, removed: list[int], laco: LaCo) -> list[dict]:
    """Merge each run of `removed` with a kept layer below into that layer; a report entry per run. Every merged
    tensor is computed and checked before any weight is written."""
    runs = removed_runs(removed)
    report = [uncompensated(run) for run in runs if run.below is None]
    edits = []
    for run in [run for run in runs if run.below is not None]:
        merged, entry = merged_layer(adapter, run, laco.scale)
        edits.append((run.below, merged))
        report.append(entry)
    for below, merged in edits:
        targets = layer_parameters(adapter.layers[below])
        for name, value in merged.items():
            module, local = targets[name]
            write_weight(module, local, value)
    return sorted(report, key=lambda e: e["removed"][0])
