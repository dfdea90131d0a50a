"""The layer-by-layer calibration pass: one decoder layer in memory at a time, every batch through it.

The whole-model pass runs batch by batch, so every decoder layer must be resident (or be reloaded
from offload for every batch). Here the loop is turned around, as in llm-compressor's sequential
pipeline:
1. a prefix pass per batch records what the model hands each layer (shortlvlm.capture.recording);
2. then for each layer: its weights are loaded once (from accelerate's weights map: for a model
   from `load(..., layerwise=True)` that is the checkpoint's own safetensors), every batch is run
   through it, its output replaces the batch's stored activations (CPU memory or a folder,
   shortlvlm.capture.activations), and the weights are released.
Collectors see the same calls with the same tensors as in the whole-model pass, only in layer-major
order; each keeps one copy of its per-batch state per batch (`Collector.batch_state`), swapped in
before a batch's call. Results are identical to the whole-model pass (tested), peak memory on the
execution device is about one layer plus one batch's activations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from shortlvlm.capture.activations import ActivationStore
from shortlvlm.capture.batch import CalibrationBatch
from shortlvlm.capture.hooks import LayerTaps, hidden_of
from shortlvlm.capture.recording import Recording, check_replay, record_layer_inputs
from shortlvlm.errors import CaptureError
from shortlvlm.io.offload import offload_hook
from shortlvlm.io.placement import Layerwise
from shortlvlm.log import progress_bar


def _to(value, device: torch.device):
    """Tensors (and objects with .to, such as CalibrationBatch) inside dicts/lists/tuples moved to device."""
    if torch.is_tensor(value) or (hasattr(value, "to") and not isinstance(value, nn.Module)):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


@contextlib.contextmanager
def onloaded(module: nn.Module) -> Iterator[None]:
    """Load the accelerate-offloaded weights inside `module` once and keep them until the block ends.

    Offload hooks normally load a module's weights before each call and drop them after; here each
    hook loads them once (its own pre_forward, so tied weights and dtypes are handled as accelerate
    does) and is told not to offload until the block ends. Modules without offload are untouched.
    """
    hooked = [(sub, hook) for sub in module.modules() if (hook := offload_hook(sub)) is not None]
    loaded = []
    try:
        for sub, hook in hooked:
            hook.pre_forward(sub)
            hook.offload = False
            loaded.append((sub, hook))
        yield
    finally:
        for sub, hook in loaded:
            hook.offload = True
            hook.post_forward(sub, None)


def run_layerwise(model: nn.Module, batches: list[CalibrationBatch], taps: LayerTaps, *, options: Layerwise,
                  device: torch.device, desc: str) -> None:
    """The layer-major loop: prefix passes record every batch's layer inputs, then each layer runs every
    batch, `taps` checking its output and feeding the collector; the attention hooks are attached for the
    layer loop only, so the prefix passes feed the collector nothing."""
    layers, collector, skip = taps.adapter.layers, taps.collector, taps.skip
    returns_tuple = taps.adapter.spec.layer_returns_tuple
    if getattr(collector, "batch_state", None) is None:
        raise CaptureError(f"{type(collector).__name__} does not declare its per-batch state (batch_state), "
                           "so it cannot run layer by layer; use a whole-model pass")
    cpu = torch.device("cpu")
    store = ActivationStore(options.activations_dir)
    recordings: list[Recording] = []
    states: list[dict | None] = []
    try:
        for number, batch in enumerate(progress_bar(batches, desc=f"{desc}: layer inputs", unit="batch", leave=False)):
            on_device = batch.to(device)
            hidden, recording = record_layer_inputs(model, layers, on_device.model_inputs(), skip, returns_tuple)
            if number == 0:
                check_replay(model, layers, on_device.model_inputs(), recording, returns_tuple)
            store.put(number, hidden)
            store.keep_inputs(number, recording)
            recordings.append(recording)
            collector.begin_batch(on_device.at_layers())
            states.append(_to(collector.get_batch_state(), cpu))
        steps = [i for i in range(len(layers)) if i not in skip or any(i in r.deltas for r in recordings)]
        with taps.attention_hooks(), progress_bar(total=len(steps) * len(batches), desc=f"{desc}: layer by layer",
                                          unit="batch", leave=False) as bar:
            for index in steps:
                layer = layers[index]
                with onloaded(layer) if index not in skip else contextlib.nullcontext():
                    for number, batch in enumerate(batches):
                        recording = recordings[number]
                        hidden_in = store.get(number, device)
                        hidden_out = hidden_in
                        if index not in skip:
                            collector.set_batch_state(_to(states[number], device))
                            positional, args, kwargs = recording.layers[index]
                            tensors = store.inputs_of(number, recording)
                            args, kwargs = (recording.unpack(args, device, tensors),
                                            recording.unpack(kwargs, device, tensors))
                            if positional:
                                output = layer(hidden_in, *args, **kwargs)
                            else:
                                output = layer(*args, hidden_states=hidden_in, **kwargs)
                            hidden_out = hidden_of(output)
                            taps.real = batch.at_layers().real
                            if index in taps.attention_layers and index not in taps.seen_attention:
                                raise CaptureError(f"the attention hook of layer {index} never ran "
                                                   "during the layer's pass")
                            taps.seen_attention.discard(index)
                            taps.layer_output(index, hidden_in, hidden_out)
                            states[number] = _to(collector.get_batch_state(), cpu)
                        if index in recording.deltas:
                            hidden_out = hidden_out + recording.deltas[index].to(device)
                        store.put(number, hidden_out)
                        bar.update()
        for number in range(len(batches)):
            collector.set_batch_state(_to(states[number], device))
            states[number] = None
            collector.end_batch()
    finally:
        store.close()
