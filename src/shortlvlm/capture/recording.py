"""What a model hands each decoder layer, recorded once per batch so the layer-by-layer pass can replay it.

A prefix pass per batch runs the model with every decoder layer stubbed out (no layer weights are
touched) and records the hidden states entering layer 0 and each layer's other arguments (attention
mask, position embeddings, ...). Anything the model adds between two layers (Qwen3-VL's deepstack
features) is recorded too, and `check_replay` proves on the first batch that it is a plain addition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from shortlvlm.capture.hooks import layer_input
from shortlvlm.errors import CaptureError


class _StopForward(Exception):
    """Raised by the last stub to end a prefix pass (the final norm and LM head are not needed)."""


@dataclass
class _Ref:
    """A placeholder for the index-th tensor of a recorded batch."""

    index: int


class Recording:
    """One batch's inputs to every layer, tensors deduplicated (the layers share one mask object)."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self.layers: dict[int, tuple[bool, tuple, dict]] = {}  # layer -> (hidden positional?, args, kwargs)
        self.deltas: dict[int, torch.Tensor] = {}  # layer -> what the model adds to its output (CPU)
        self.spilled = 0  # how many tensors were moved to the activation folder
        self._ids: dict[int, int] = {}
        self._originals: list[torch.Tensor] = []  # keeps ids unique while recording

    def pack(self, value):
        if torch.is_tensor(value):
            if id(value) not in self._ids:
                self._ids[id(value)] = len(self.tensors)
                self._originals.append(value)
                self.tensors.append(value.detach().to("cpu"))
            return _Ref(self._ids[id(value)])
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return tuple(self.pack(v) for v in value)
        if isinstance(value, list):
            return [self.pack(v) for v in value]
        if isinstance(value, dict):
            return {k: self.pack(v) for k, v in value.items()}
        return value

    def unpack(self, value, device: torch.device, tensors: list[torch.Tensor] | None = None):
        tensors = self.tensors if tensors is None else tensors
        if isinstance(value, _Ref):
            return tensors[value.index].to(device)
        if isinstance(value, tuple):
            return tuple(self.unpack(v, device, tensors) for v in value)
        if isinstance(value, list):
            return [self.unpack(v, device, tensors) for v in value]
        if isinstance(value, dict):
            return {k: self.unpack(v, device, tensors) for k, v in value.items()}
        return value

    def done(self) -> None:
        self._ids.clear()
        self._originals.clear()


@contextlib.contextmanager
def _stubbed_layers(layers: nn.ModuleList, record, returns_tuple: bool) -> Iterator[None]:
    """Replace each layer's forward (accelerate's wrapper included) by `record(index, args, kwargs)`,
    its result wrapped in a tuple for layers whose callers index their output (`layer_returns_tuple`)."""
    saved = []
    for index, layer in enumerate(layers):
        saved.append((layer, layer.__dict__.get("forward")))

        def stub(*args, _index=index, **kwargs):
            hidden = record(_index, args, kwargs)
            return (hidden,) if returns_tuple else hidden

        layer.forward = stub
    try:
        yield
    finally:
        for layer, forward in saved:
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward


def _refuse_replay(model: nn.Module, index: int, why: str) -> CaptureError:
    return CaptureError(
        f"{type(model).__name__} {why} between decoder layers {index - 1} and {index}, which the layer-by-layer "
        "pass cannot replay; run without --layerwise (accelerate offload, --device-map auto, also bounds memory)"
    )


def _run_stubbed(model: nn.Module, layers: nn.ModuleList, inputs: dict, record, returns_tuple: bool) -> None:
    with _stubbed_layers(layers, record, returns_tuple), contextlib.suppress(_StopForward):
        model(**inputs)


def record_layer_inputs(model: nn.Module, layers: nn.ModuleList, inputs: dict, skip: set[int],
                        returns_tuple: bool = False) -> tuple[torch.Tensor, Recording]:
    """(hidden states entering layer 0 on CPU, every layer's other inputs) for one batch.

    Each stub returns zeros, so what the next stub receives is whatever the model adds between the
    two layers (Qwen3-VL's deepstack adds visual features after its first layers): kept as that
    layer's `delta` and added to its output in the replay (`check_replay` proves it is additive).
    """
    recording = Recording()
    seen: dict[str, torch.Tensor] = {}
    last = len(layers) - 1

    def record(index, args, kwargs):
        hidden = layer_input(args, kwargs)
        if index == 0:
            seen["first"] = hidden.detach().to("cpu")
        elif hidden is not seen["returned"]:
            if hidden.shape != seen["returned"].shape:
                raise _refuse_replay(model, index, "reshapes the hidden states (or its layers return tuples)")
            if torch.count_nonzero(hidden):
                recording.deltas[index - 1] = hidden.detach().to("cpu")
        if index not in skip:  # everything but the hidden states (positional, or the hidden_states keyword)
            rest_kwargs = {k: v for k, v in kwargs.items() if args or k != "hidden_states"}
            recording.layers[index] = (bool(args), recording.pack(args[1:]), recording.pack(rest_kwargs))
        if index == last:
            raise _StopForward
        seen["returned"] = torch.zeros_like(hidden)
        return seen["returned"]

    _run_stubbed(model, layers, inputs, record, returns_tuple)
    recording.done()
    if "first" not in seen:
        raise CaptureError("the model's forward pass never reached its first decoder layer")
    return seen["first"], recording


def check_replay(model: nn.Module, layers: nn.ModuleList, inputs: dict, recording: Recording,
                 returns_tuple: bool = False) -> None:
    """Run the stubs again returning their input: what reaches each layer must equal the previous
    layer's output plus the recorded delta, bit for bit, or the replay would not match the model."""
    seen: dict[str, torch.Tensor] = {}
    last = len(layers) - 1

    def record(index, args, kwargs):
        hidden = layer_input(args, kwargs)
        if index > 0:
            previous = seen["returned"]
            delta = recording.deltas.get(index - 1)
            expected = previous if delta is None else previous + delta.to(previous.device)
            if hidden.shape != expected.shape or not torch.equal(hidden, expected):
                raise _refuse_replay(model, index, "transforms the hidden states (not by adding a fixed term)")
        if index == last:
            raise _StopForward
        seen["returned"] = hidden
        return hidden

    _run_stubbed(model, layers, inputs, record, returns_tuple)


