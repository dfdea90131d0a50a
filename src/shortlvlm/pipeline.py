"""End-to-end jobs composed from the library pieces: the CLI and demo call these."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shortlvlm.checkpoint import VerifyReport, save, verify
from shortlvlm.models import Adapter, get_adapter
from shortlvlm.plan import Plan
from shortlvlm.surgery import drop_layers, validate_layer_selection


@dataclass
class PruneResult:
    """What a pruning job produced."""

    out_dir: Path
    plan: Plan
    params_before: int
    params_after: int
    report: VerifyReport | None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_layers_to_checkpoint(
    model: nn.Module,
    processor: object | None,
    layers: list[int],
    out_dir: str | os.PathLike,
    *,
    adapter: Adapter | None = None,
    overwrite: bool = False,
    verify_checkpoint: bool = True,
    verify_inputs: dict[str, torch.Tensor] | None = None,
    trust_remote_code: bool = False,
    source: str = "",
) -> PruneResult:
    """Remove the given layers, save a standard checkpoint, and verify it before it lands in out_dir."""
    adapter = adapter or get_adapter(model)
    removed = validate_layer_selection(layers, adapter)
    plan = Plan(
        method="manual",
        num_layers_before=adapter.num_layers,
        removed_layers=removed,
        model={"name_or_path": source, "class": type(model).__name__, "adapter": adapter.spec.name},
    )
    params_before = count_parameters(model)
    drop_layers(model, removed, adapter)
    out, report = write_checkpoint(model, processor, plan, out_dir, overwrite=overwrite,
                                   verify_checkpoint=verify_checkpoint, verify_inputs=verify_inputs,
                                   trust_remote_code=trust_remote_code)
    return PruneResult(out, plan, params_before, count_parameters(model), report)


def write_checkpoint(
    model: nn.Module,
    processor: object | None,
    plan: Plan,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    verify_checkpoint: bool = True,
    verify_inputs: dict[str, torch.Tensor] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Path, VerifyReport | None]:
    """Save a pruned model atomically; with verification, it lands only if the reload reproduces it."""
    reports: list[VerifyReport] = []

    def check(tmp: Path) -> None:
        reports.append(verify(model, tmp, verify_inputs, trust_remote_code=trust_remote_code))

    out = save(model, processor, plan, out_dir, overwrite=overwrite, check=check if verify_checkpoint else None)
    return out, reports[0] if reports else None


def benchmark_samples(bench: str, data: str | os.PathLike | None = None, limit: int | None = None) -> list:
    """The questions of a benchmark (`shapes` is generated; the others are read from `data`)."""
    from shortlvlm.data.benchmarks import load_benchmark
    from shortlvlm.errors import ShortLVLMError
    from shortlvlm.toy import bench as shapes

    if bench == shapes.NAME:
        return shapes.load_shapes(limit)
    if data is None:
        raise ShortLVLMError(f"--data is required for {bench}: the folder holding its files")
    return load_benchmark(bench, data, limit)


def evaluate(
    model: nn.Module, processor, bench: str, samples: list, *, batch_size: int = 16, progress: bool = True
) -> tuple[dict, dict[str, str]]:
    """Answer benchmark questions (from benchmark_samples) and score them: (metrics, {id: answer})."""
    from shortlvlm.data.benchmarks import score_benchmark
    from shortlvlm.eval.generate import answer_samples
    from shortlvlm.toy import bench as shapes

    predictions = answer_samples(model, processor, samples, batch_size=batch_size, progress=progress)
    if bench == shapes.NAME:
        return shapes.score_shapes(samples, predictions), predictions
    return score_benchmark(bench, samples, predictions), predictions
