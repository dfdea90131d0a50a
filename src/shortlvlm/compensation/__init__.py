"""Compensation: training-free weight edits bridging the gap removed layers leave (docs/design.md §2.3, §2.6, §2.6.1).

Each compensation is an options object (fields = CLI flags = the plan's record) with the same
lifecycle: `measure` streams its statistics in capture passes that leave the weights as they
were (one pass over the unpruned model; one per run for the bridge's sequential streams; a
resumed job skips them, the statistics are saved), then `apply` edits the kept layer below each
run of removed layers before the layers are dropped (the magnitude compensation edits the kept
layers above each run instead). A run that starts at layer 0 has no kept layer below it and is
reported as uncompensated.

- `SCP` (scp.py): Short-LVLM's subspace-compensated pruning, (I + alpha V V^T) W.
- `LstSq` (lstsq.py): ReplaceMe's least-squares bridge, T^T W with a ridge-regularised T.
- `Cosine` (cosine.py): ReplaceMe's cosine bridge, T^T W with T fitted by Adam to the cosine distance.
- `Magnitude` (magnitude.py): Prune&Comp's magnitude compensation, one scalar per run merged into the writers.
- `LaCo` (laco.py): LaCo's layer merge, θ_r + Σ_k (θ_pk - θ_r) over every parameter; no calibration data
  (`needs_data = False`: `measure` runs no pass).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation.cosine import Cosine
from shortlvlm.compensation.laco import LaCo
from shortlvlm.compensation.lstsq import LstSq, measure_bridges, solve_bridge
from shortlvlm.compensation.magnitude import Magnitude, magnitude_factor, measure_magnitudes
from shortlvlm.compensation.runs import WRITER_CHOICES, RemovedRun, removed_runs, writer_names
from shortlvlm.compensation.scp import SCP, GapStatistics, edit_writer, fit_alpha, measure_gaps, top_subspace
from shortlvlm.errors import CompensationError
from shortlvlm.models import Adapter

Compensation = SCP | LstSq | Cosine | Magnitude | LaCo
COMPENSATIONS: dict[str, type[Compensation]] = {
    "scp": SCP, "lstsq": LstSq, "cosine": Cosine, "magnitude": Magnitude, "laco": LaCo,
}
COMPENSATION_NAMES = ("none", *COMPENSATIONS)


def compensation_named(name: str) -> Compensation | None:
    """The compensation `name` with its default options; None for "none"."""
    if name == "none":
        return None
    if name not in COMPENSATIONS:
        raise CompensationError(
            f"unknown compensation {name!r}; choose one of: {', '.join(COMPENSATION_NAMES)}"
        )
    return COMPENSATIONS[name]()


def compensation_needs_data(compensation: Compensation | type[Compensation] | None) -> bool:
    """Whether a compensation reads calibration data (every one unless it declares `needs_data = False`)."""
    return compensation is not None and getattr(compensation, "needs_data", True)


def compensation_record(compensation: Compensation | None) -> tuple[str, dict | None]:
    """(name, options dict) as a plan records them: ("none", None) without compensation."""
    return ("none", None) if compensation is None else (compensation.name, compensation.to_dict())


def compensate(
    model: nn.Module,
    adapter: Adapter,
    batches: list[CalibrationBatch],
    removed: list[int],
    compensation: Compensation = SCP(),
    *,
    gaps: Callable[[], dict[str, torch.Tensor]] | None = None,
) -> list[dict]:
    """Measure the statistics of `removed` (original indices) on the unpruned model and edit the kept layers.

    Call before the layers are dropped. Returns one report entry per run of removed layers.
    SCP with `tis` None measures on TIS() (the caller resolves "follow the scorer"). `gaps` supplies the
    statistics instead of a new capture pass (e.g. a resumed job's saved ones, shortlvlm.resume).
    """
    if not isinstance(compensation, tuple(COMPENSATIONS.values())):
        raise CompensationError(
            f"unknown compensation {compensation!r}; pass one of "
            f"{', '.join(c.__name__ for c in COMPENSATIONS.values())}, or None"
        )
    if all(run.below is None for run in removed_runs(removed)):
        return compensation.apply(model, adapter, removed, {})
    measured = (
        gaps()
        if gaps is not None
        else compensation.measure(model, adapter, batches, removed)
    )
    return compensation.apply(model, adapter, removed, measured)


__all__ = [
    "COMPENSATIONS",
    "COMPENSATION_NAMES",
    "SCP",
    "WRITER_CHOICES",
    "Compensation",
    "Cosine",
    "GapStatistics",
    "LaCo",
    "LstSq",
    "Magnitude",
    "RemovedRun",
    "compensate",
    "compensation_named",
    "compensation_needs_data",
    "compensation_record",
    "edit_writer",
    "fit_alpha",
    "magnitude_factor",
    "measure_bridges",
    "measure_gaps",
    "measure_magnitudes",
    "removed_runs",
    "solve_bridge",
    "top_subspace",
    "writer_names",
]
