"""`capture`: one calibration pass over a model with hooks on its decoder layers, whole-model or layer by layer.

Collectors receive each layer's input/output residual stream and (for the probe layers) the
head-averaged attention probabilities while the layer runs, reduce them at once, and keep only
small per-batch summaries: no T x T map and no full set of hidden states outlives its layer.
The two passes are siblings behind this dispatcher; both use the same `LayerTaps` and give the
collector the same calls with the same tensors, only in another order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from shortlvlm.capture.batch import CalibrationBatch
from shortlvlm.capture.hooks import Collector, LayerTaps, eager_attention
from shortlvlm.capture.layerwise import run_layerwise
from shortlvlm.capture.whole_model import run_whole_model
from shortlvlm.io.offload import input_device
from shortlvlm.io.placement import Layerwise, layerwise_options
from shortlvlm.models import Adapter


@torch.inference_mode()
def capture(
    model: nn.Module,
    adapter: Adapter,
    batches: list[CalibrationBatch],
    collector: Collector,
    *,
    attention_layers: Iterable[int] = (),
    skip_layers: Iterable[int] = (),
    desc: str = "capture",
    layerwise: Layerwise | bool | None = None,
) -> None:
    """Run every batch through the model once, feeding `collector` from hooks as layers run.

    `layerwise`: None runs the pass as the model was loaded (layer by layer after
    `load(..., layerwise=True)` or `use_layerwise`), True/Layerwise(...) forces the layer-by-layer
    pass, False the whole-model pass. Both give the collector the same results.
    """
    if layerwise is None:
        layerwise = layerwise_options(model)
    elif layerwise is True:
        layerwise = Layerwise()
    taps = LayerTaps(adapter, collector, attention_layers, skip_layers)
    device = input_device(model)
    with eager_attention(model) if taps.attention_layers else contextlib.nullcontext():
        if layerwise:
            run_layerwise(model, batches, taps, options=layerwise, device=device, desc=desc)
        else:
            run_whole_model(model, batches, taps, device=device, desc=desc)
