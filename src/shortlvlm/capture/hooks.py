"""What both calibration passes attach to a model: the collector interface, the hidden-state helpers,
and `LayerTaps`, which checks each decoder layer's output and reduces its attention for the collector."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from shortlvlm.capture.batch import CalibrationBatch
from shortlvlm.errors import CaptureError
from shortlvlm.models import Adapter


class Collector:
    """Receives what the capture pass sees; subclasses keep only reduced statistics."""

    # Attributes holding the current batch's state (set by begin_batch, used until end_batch). The
    # layer-by-layer pass feeds every batch through one layer before the next, so it keeps one copy
    # of these per batch and swaps it in; None: not declared, not layer-by-layer.
    batch_state: tuple[str, ...] | None = None

    def get_batch_state(self) -> dict:
        return {name: getattr(self, name) for name in self.batch_state or ()}

    def set_batch_state(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def begin_batch(self, batch: CalibrationBatch) -> None:
        pass

    def attention(self, layer: int, probs: torch.Tensor, allowed: torch.Tensor) -> None:
        """probs: [B, T, T] head-averaged attention (query rows); allowed: where the mask lets it attend."""

    def layer_output(self, layer: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        """Residual stream entering and leaving decoder layer `layer`, [B, T, d]."""

    def end_batch(self) -> None:
        pass


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run with eager attention (the only kernel that returns probabilities), then restore."""
    original = getattr(model.config, "_attn_implementation", None)
    if original in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(original)


def hidden_of(value) -> torch.Tensor:
    """The hidden-state tensor in a layer's positional input or output (tensor or tuple)."""
    return value if torch.is_tensor(value) else value[0]


def layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states among a decoder layer's call arguments (first positional, or `hidden_states`)."""
    if args:
        return hidden_of(args[0])
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise CaptureError("cannot find the hidden states among the decoder layer's inputs")


def _replace_hidden(output, hidden: torch.Tensor):
    """`output` with its hidden-state tensor replaced, same structure."""
    if torch.is_tensor(output):
        return hidden
    return (hidden, *output[1:])


def _allowed_entries(kwargs: dict, probs: torch.Tensor) -> torch.Tensor:
    """[B, T, T] bool: entries the layer's own attention mask permits (causal if it passes none)."""
    mask = kwargs.get("attention_mask")
    batch, _, queries, keys = probs.shape
    if torch.is_tensor(mask) and mask.dim() == 4 and mask.shape[-2:] == (queries, keys):
        allowed = mask[:, 0] if mask.dtype == torch.bool else mask[:, 0] == 0
        return allowed.expand(batch, queries, keys)
    causal = torch.ones(queries, keys, dtype=torch.bool, device=probs.device).tril(keys - queries)
    return causal.expand(batch, queries, keys)


# How a decoder layer class returns its output, learned from a real call (see `bypass_layers`): a
# tensor, or a tuple whose entries after the hidden states are all None (then its length), or
# "compute" when those entries carry something (attention maps, a cache) a pass-through cannot fake.
# Kept per adapter (`Adapter.output_forms`, one model's lifetime), never process-wide.
OutputForms = dict[tuple, object]


def _call_signature(layer: nn.Module, kwargs: dict) -> tuple:
    """What can change a layer's output structure: its class, the flags it is called with, a cache."""
    flags = tuple(sorted(k for k, v in kwargs.items() if isinstance(v, bool) and v))
    cache = any(v is not None and not isinstance(v, bool) for k, v in kwargs.items() if "cache" in k or "past_key" in k)
    return type(layer), flags, cache


def _output_form(output) -> object:
    if torch.is_tensor(output):
        return "tensor"
    if isinstance(output, tuple) and all(entry is None for entry in output[1:]):
        return len(output)
    return "compute"


@contextlib.contextmanager
def bypass_layers(adapter: Adapter, indices: Iterable[int]) -> Iterator[None]:
    """Make the given decoder layers pass their input through unchanged (in place, no copies).

    A bypassed layer is not computed: its `forward` is swapped for a pass-through returning the input
    in the structure the layer's class returns (learned from one real call per class and call
    signature, remembered in `adapter.output_forms` for the model's lifetime; a class whose output carries
    more than the hidden states is computed and its hidden states replaced). Hooks on the layer still run.
    docs/design.md §2.4.
    """
    forms: OutputForms = getattr(adapter, "output_forms", None)
    if forms is None:  # an adapter-like object without the store: learned for this context only
        forms = {}
    patched = []
    for index in sorted(set(indices)):
        layer = adapter.layers[index]
        original = layer.forward  # the instance's own wrapper (accelerate's offload hook) when there is one

        def pass_through(*args, _original=original, _layer=layer, **kwargs):
            hidden = layer_input(args, kwargs)
            signature = _call_signature(_layer, kwargs)
            form = forms.get(signature)
            if form is None or form == "compute":
                output = _original(*args, **kwargs)
                forms[signature] = _output_form(output)
                return _replace_hidden(output, hidden)
            return hidden if form == "tensor" else (hidden, *([None] * (form - 1)))

        patched.append((layer, layer.__dict__.get("forward")))
        layer.forward = pass_through
    try:
        yield
    finally:
        for layer, previous in reversed(patched):
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous


class LayerTaps:
    """Checks every decoder layer's output and feeds a collector, for whichever pass runs the layers.

    `layer_output` refuses NaN/Inf on the batch's real tokens (set `real` per batch) and hands the
    streams of the layers not skipped to the collector; `attention_hooks()` attaches hooks that reduce
    the probe layers' attention to a head average inside the hook, so no T x T map outlives its layer.
    """

    def __init__(self, adapter: Adapter, collector: Collector, attention_layers: Iterable[int] = (),
                 skip_layers: Iterable[int] = ()):
        self.adapter = adapter
        self.collector = collector
        self.skip = set(skip_layers)
        self.attention_layers = sorted(set(attention_layers) - self.skip)
        self.seen_attention: set[int] = set()
        self.real: torch.Tensor | None = None  # [B, T] non-padding positions of the current batch

    def layer_output(self, index: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        if hidden_out.shape[:2] != self.real.shape:
            raise CaptureError(
                f"decoder layer {index} sees {hidden_out.shape[1]} positions per sample, but the batch's token "
                f"masks cover {self.real.shape[1]}: the {self.adapter.spec.name} adapter places the image "
                "tokens wrongly for this model (check its layer_positions and the image token count in the config)"
            )
        if not torch.isfinite(hidden_out[self.real.to(hidden_out.device)]).all():
            raise CaptureError(
                f"decoder layer {index} produced NaN/Inf activations ({hidden_out.dtype}); the statistics "
                "would be meaningless. Load the model in bfloat16 or float32 (--dtype) instead of float16"
            )
        if index not in self.skip:
            self.collector.layer_output(index, hidden_in, hidden_out)

    def _ask_for_probabilities(self, module, args, kwargs):
        return args, {**kwargs, **self.adapter.spec.attention_call_kwargs}

    def _on_attention(self, index: int):
        at = self.adapter.spec.attention_probs_index

        def hook(module, args, kwargs, output):
            probs = output[at] if isinstance(output, tuple) and len(output) > at else None
            if not torch.is_tensor(probs) or probs.dim() != 4:
                raise CaptureError(
                    f"the attention module of layer {index} returned no attention probabilities even with "
                    "eager attention; token importance cannot be computed for this architecture. Use a "
                    "scorer that does not need attention (e.g. --method tis-cosine --tis-tokens all)"
                )
            self.seen_attention.add(index)
            allowed = _allowed_entries(kwargs, probs)
            # Fully masked rows (padding queries) can hold NaN; only allowed entries are defined.
            mean = probs.to(torch.promote_types(probs.dtype, torch.float32)).mean(dim=1).masked_fill_(~allowed, 0.0)
            self.collector.attention(index, mean, allowed)
        return hook

    @contextlib.contextmanager
    def attention_hooks(self) -> Iterator[None]:
        added = [self.adapter.attention_module(index).register_forward_hook(self._on_attention(index),
                                                                            with_kwargs=True)
                 for index in self.attention_layers]
        if self.adapter.spec.attention_call_kwargs:
            added += [self.adapter.attention_module(index).register_forward_pre_hook(self._ask_for_probabilities,
                                                                                     with_kwargs=True)
                      for index in self.attention_layers]
        try:
            yield
        finally:
            for handle in added:
                handle.remove()
