"""One forward pass per calibration batch with hooks on the decoder layers and attention modules.

Collectors receive each layer's input/output residual stream and (for the probe layers) the
head-averaged attention probabilities while the layer runs, reduce them at once, and keep only
small per-batch summaries: no T x T map and no full set of hidden states outlives its layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

from shortlvlm.errors import ShortLVLMError
from shortlvlm.models import Adapter
from shortlvlm.offload import input_device

if TYPE_CHECKING:
    from shortlvlm.layerwise import Layerwise


class CaptureError(ShortLVLMError):
    """The capture pass cannot produce trustworthy statistics (no attention weights, NaN/Inf, ...)."""


@dataclass
class CalibrationBatch:
    """Model inputs plus the token masks the statistics need, all shaped [batch, seq]."""

    inputs: dict[str, torch.Tensor]
    valid: torch.Tensor  # real tokens: not padding, not special (BOS/EOS/template specials)
    image: torch.Tensor  # image-placeholder positions (a subset of valid)
    answer: torch.Tensor | None = None  # positions of answer tokens, for loss-based scorers

    @property
    def text(self) -> torch.Tensor:
        return self.valid & ~self.image

    @property
    def real(self) -> torch.Tensor:
        """[B, T] every non-padding position (special tokens included)."""
        mask = self.inputs.get("attention_mask")
        return mask.bool() if torch.is_tensor(mask) and mask.dim() == 2 else torch.ones_like(self.valid)

    def to(self, device: torch.device | str) -> CalibrationBatch:
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        answer = None if self.answer is None else self.answer.to(device)
        return CalibrationBatch(moved, self.valid.to(device), self.image.to(device), answer)


def batch_from_inputs(adapter: Adapter, inputs: dict[str, torch.Tensor], special_ids: Iterable[int] = ()) -> CalibrationBatch:
    """Masks for an already encoded batch: padding from attention_mask, images from the adapter."""
    input_ids = inputs["input_ids"]
    attention = inputs.get("attention_mask")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention is None else attention.bool()
    image = adapter.image_token_mask(input_ids) & valid
    special = torch.zeros_like(valid)
    for token_id in set(special_ids):
        special |= input_ids == token_id
    return CalibrationBatch(dict(inputs), valid & (~special | image), image)


class Collector:
    """Receives what the capture pass sees; subclasses keep only reduced statistics."""

    # Attributes holding the current batch's state (set by begin_batch, used until end_batch). The
    # layer-by-layer pass (shortlvlm.layerwise) feeds every batch through one layer before the next,
    # so it keeps one copy of these per batch and swaps it in; None: not declared, not layer-by-layer.
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


def _hidden_of(value) -> torch.Tensor:
    """The hidden-state tensor in a layer's positional input or output (tensor or tuple)."""
    return value if torch.is_tensor(value) else value[0]


def _layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return _hidden_of(args[0])
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


@contextlib.contextmanager
def bypass_layers(adapter: Adapter, indices: Iterable[int]) -> Iterator[None]:
    """Make the given decoder layers pass their input through unchanged (in place, no copies)."""
    handles = []
    for index in sorted(set(indices)):
        inputs: dict[str, torch.Tensor] = {}

        def remember(module, args, kwargs, store=inputs):
            store["h"] = _layer_input(args, kwargs)

        def pass_through(module, args, kwargs, output, store=inputs):
            return _replace_hidden(output, store.pop("h"))

        layer = adapter.layers[index]
        handles.append(layer.register_forward_pre_hook(remember, with_kwargs=True))
        handles.append(layer.register_forward_hook(pass_through, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _model_inputs(batch: CalibrationBatch) -> dict[str, torch.Tensor]:
    return {**batch.inputs, "use_cache": False}


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
    progress: bool = True,
    layerwise: Layerwise | bool | None = None,
) -> None:
    """Run every batch through the model once, feeding `collector` from hooks as layers run.

    `layerwise`: None runs the pass as the model was loaded (layer by layer after
    `load(..., layerwise=True)` or `use_layerwise`), True/Layerwise(...) forces the layer-by-layer
    pass, False the whole-model pass. Both give the collector the same results.
    """
    from shortlvlm.layerwise import Layerwise, layerwise_options, run_layerwise

    attention_layers = sorted(set(attention_layers) - set(skip_layers))
    skip = set(skip_layers)
    if layerwise is None:
        layerwise = layerwise_options(model)
    elif layerwise is True:
        layerwise = Layerwise()
    handles = []
    inputs: dict[int, torch.Tensor] = {}
    seen_attention: set[int] = set()
    current: dict[str, torch.Tensor] = {}

    def check_and_collect(index: int, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        if not torch.isfinite(hidden_out[current["real"]]).all():
            raise CaptureError(
                f"decoder layer {index} produced NaN/Inf activations ({hidden_out.dtype}); the statistics "
                "would be meaningless. Load the model in bfloat16 or float32 (--dtype) instead of float16"
            )
        if index not in skip:
            collector.layer_output(index, hidden_in, hidden_out)

    def on_layer_input(index):
        def hook(module, args, kwargs):
            inputs[index] = _layer_input(args, kwargs)
        return hook

    def on_layer_output(index):
        def hook(module, args, kwargs, output):
            check_and_collect(index, inputs.pop(index), _hidden_of(output))
        return hook

    def on_attention(index):
        def hook(module, args, kwargs, output):
            probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not torch.is_tensor(probs) or probs.dim() != 4:
                raise CaptureError(
                    f"the attention module of layer {index} returned no attention probabilities even with "
                    "eager attention; token importance cannot be computed for this architecture. Use a "
                    "scorer that does not need attention (e.g. --method tis-cosine --tis-tokens all)"
                )
            seen_attention.add(index)
            allowed = _allowed_entries(kwargs, probs)
            # Fully masked rows (padding queries) can hold NaN; only allowed entries are defined.
            mean = probs.to(torch.promote_types(probs.dtype, torch.float32)).mean(dim=1).masked_fill_(~allowed, 0.0)
            collector.attention(index, mean, allowed)
        return hook

    @contextlib.contextmanager
    def attention_hooks():
        added = [adapter.attention_module(index).register_forward_hook(on_attention(index), with_kwargs=True)
                 for index in attention_layers]
        try:
            yield
        finally:
            for handle in added:
                handle.remove()

    device = input_device(model)
    with contextlib.ExitStack() as stack:
        if attention_layers:
            stack.enter_context(eager_attention(model))
        if layerwise:
            def layer_done(index, hidden_in, hidden_out, batch):
                current["real"] = batch.real.to(hidden_out.device)
                if index in attention_layers and index not in seen_attention:
                    raise CaptureError(f"the attention hook of layer {index} never ran during the layer's pass")
                seen_attention.discard(index)
                check_and_collect(index, hidden_in, hidden_out)

            run_layerwise(model, adapter.layers, batches, collector, device=device, skip=skip, options=layerwise,
                          model_inputs=_model_inputs, on_layer_output=layer_done, attention_hooks=attention_hooks,
                          desc=desc, progress=progress)
            return
        stack.enter_context(bypass_layers(adapter, skip))
        stack.enter_context(attention_hooks())
        for index, layer in enumerate(adapter.layers):
            handles.append(layer.register_forward_pre_hook(on_layer_input(index), with_kwargs=True))
            handles.append(layer.register_forward_hook(on_layer_output(index), with_kwargs=True))
        try:
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
                batch = batch.to(device)
                seen_attention.clear()
                current["real"] = batch.real
                collector.begin_batch(batch)
                model(**_model_inputs(batch))
                missing = set(attention_layers) - seen_attention
                if missing:
                    raise CaptureError(f"attention hooks of layers {sorted(missing)} never ran during the forward pass")
                collector.end_batch()
        finally:
            for handle in handles:
                handle.remove()
            inputs.clear()
