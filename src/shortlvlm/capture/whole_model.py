"""The whole-model calibration pass: every batch runs through the model once, hooks on every layer."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from shortlvlm.capture.batch import CalibrationBatch
from shortlvlm.capture.hooks import LayerTaps, bypass_layers, hidden_of, layer_input
from shortlvlm.errors import CaptureError
from shortlvlm.log import progress_bar


def run_whole_model(model: nn.Module, batches: list[CalibrationBatch], taps: LayerTaps, *, device: torch.device,
                    desc: str) -> None:
    """Batch by batch: forward hooks hand each layer's input and output to `taps` as the layer runs."""
    adapter, collector = taps.adapter, taps.collector
    inputs: dict[int, torch.Tensor] = {}

    def on_layer_input(index):
        def hook(module, args, kwargs):
            inputs[index] = layer_input(args, kwargs)
        return hook

    def on_layer_output(index):
        def hook(module, args, kwargs, output):
            taps.layer_output(index, inputs.pop(index), hidden_of(output))
        return hook

    handles = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(bypass_layers(adapter, taps.skip))
        stack.enter_context(taps.attention_hooks())
        for index, layer in enumerate(adapter.layers):
            handles.append(layer.register_forward_pre_hook(on_layer_input(index), with_kwargs=True))
            handles.append(layer.register_forward_hook(on_layer_output(index), with_kwargs=True))
        try:
            for batch in progress_bar(batches, desc=desc, unit="batch", leave=False):
                batch = batch.to(device)
                taps.seen_attention.clear()
                taps.real = batch.at_layers().real
                collector.begin_batch(batch.at_layers())
                model(**batch.model_inputs())
                missing = set(taps.attention_layers) - taps.seen_attention
                if missing:
                    raise CaptureError(f"attention hooks of layers {sorted(missing)} never ran during the forward pass")
                collector.end_batch()
        finally:
            for handle in handles:
                handle.remove()
            inputs.clear()
