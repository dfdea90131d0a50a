"""A pruned model becomes a checkpoint: saved, reloaded and verified before it lands (and listed-layer pruning)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shortlvlm.io.fingerprint import model_fingerprint
from shortlvlm.io.save import save
from shortlvlm.io.verify import VerifyReport, verify
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
    adapter: Adapter  # the pruned model's


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def checkpoint_bytes(skeleton: nn.Module, adapter: Adapter, num_removed: int, dtype: str = "auto") -> int:
    """About how many bytes the pruned checkpoint's weights take: the skeleton's parameters without the
    `num_removed` smallest decoder layers, in `dtype` ("auto": the dtype the config records)."""
    if dtype == "auto":
        dtype = getattr(skeleton.config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, torch.float32)
    layer_sizes = sorted(sum(p.numel() for p in layer.parameters()) for layer in adapter.layers)
    kept = count_parameters(skeleton) - sum(layer_sizes[:num_removed])
    return kept * torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class Verification:
    """How a written checkpoint is checked before it lands: reloaded (unless `enabled` is False) and compared with
    the in-memory model on `inputs` (default: generated ones); its own code runs only with `trust_remote_code`."""

    enabled: bool = True
    inputs: dict[str, torch.Tensor] | None = None
    trust_remote_code: bool = False


def prune_layers_to_checkpoint(
    model: nn.Module,
    processor: object | None,
    layers: list[int],
    out_dir: str | os.PathLike,
    *,
    adapter: Adapter | None = None,
    overwrite: bool = False,
    verification: Verification = Verification(),
    source: str = "",
) -> PruneResult:
    """Remove the given layers, save a standard checkpoint, and verify it before it lands in out_dir."""
    adapter = adapter or get_adapter(model)
    removed = validate_layer_selection(layers, adapter)
    plan = Plan(
        method="manual",
        num_layers_before=adapter.num_layers,
        removed_layers=removed,
        model={"name_or_path": source, "class": type(model).__name__, "adapter": adapter.spec.name,
               "fingerprint": model_fingerprint(model)},  # what the checkpoint was pruned from (bench checks it)
    )
    params_before = count_parameters(model)
    drop_layers(model, removed, adapter)
    out, report = write_checkpoint(model, processor, plan, out_dir, overwrite=overwrite, verification=verification)
    return PruneResult(out, plan, params_before, count_parameters(model), report, adapter)


def write_checkpoint(
    model: nn.Module,
    processor: object | None,
    plan: Plan,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    verification: Verification = Verification(),
) -> tuple[Path, VerifyReport | None]:
    """Save a pruned model atomically; with verification, it lands only if the reload reproduces it."""
    reports: list[VerifyReport] = []

    def check(tmp: Path) -> None:
        reports.append(verify(model, tmp, verification.inputs, trust_remote_code=verification.trust_remote_code))

    out = save(model, processor, plan, out_dir, overwrite=overwrite, check=check if verification.enabled else None)
    return out, reports[0] if reports else None
