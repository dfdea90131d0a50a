"""Answer-token loss of the model, optionally with layers bypassed in place: what the loss-based
scorers (`ppl`, `sleb`, `taylor`) measure.

The loss is the mean negative log-likelihood of the calibration answers' tokens given the image and
the prompt (teacher forcing), pooled over every answer token of the calibration set. Only the
logits of positions that predict an answer token are computed (`logits_to_keep` where the model
accepts it), so the [batch, seq, vocab] tensor of a large-vocabulary model is never materialised.

The image encoder (vision tower and projector) is never pruned, so its output for a calibration
batch is the same in every pass: the first pass keeps it (what the model's `get_image_features`
returned, without the tower's per-layer hidden states) and later passes hand it to the model as
`mm_encoder_outputs` instead of the pixels, which transformers' VLMs accept in place of running the
encoder. Models whose forward does not take `mm_encoder_outputs` run the encoder every pass.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from shortlvlm.capture import CalibrationBatch, bypass_layers
from shortlvlm.capture.hooks import layer_input
from shortlvlm.io.offload import input_device
from shortlvlm.scoring.base import ScoringContext, ScoringError


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_positions(batch: CalibrationBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(columns t whose logits predict an answer token at t+1, targets [B, K], mask [B, K])."""
    if batch.answer is None:
        raise ScoringError(
            "this scorer needs answer tokens (it measures the loss on them); give a calibration set whose "
            "samples have answers (a conversation with a reply, or prompt + answer)"
        )
    batch = batch.at_layers()  # the logits are over the positions the layers see
    predicts = batch.answer[:, 1:]
    columns = predicts.any(dim=0).nonzero().flatten()
    targets = batch.token_ids[:, columns + 1]
    return columns, targets, predicts[:, columns]


def _encoder_owner(model: nn.Module) -> nn.Module | None:
    """The module whose forward runs the image encoder through `get_image_features` and accepts its
    output as `mm_encoder_outputs` instead (transformers' VLMs: the inner `model`), or None."""
    def takes_encoder_outputs(module: nn.Module) -> bool:
        try:
            return "mm_encoder_outputs" in inspect.signature(module.forward).parameters
        except (TypeError, ValueError):
            return False
    inner = getattr(model, "model", None)
    if (isinstance(inner, nn.Module) and callable(getattr(inner, "get_image_features", None))
            and takes_encoder_outputs(model) and takes_encoder_outputs(inner)):
        return inner
    return None


_ENCODER_FIELDS_DROPPED = ("hidden_states", "attentions", "last_hidden_state")  # not read by the decoder side


@contextlib.contextmanager
def _keep_encoder_output(owner: nn.Module, store: dict[int, object], number: int) -> Iterator[None]:
    """While a batch runs, keep what `owner.get_image_features` returns (the features the decoder reads)."""
    original = owner.get_image_features
    had_instance_attribute = "get_image_features" in owner.__dict__

    @functools.wraps(original)
    def keeping(*args, **kwargs):
        output = original(*args, **kwargs)
        if hasattr(output, "pooler_output"):  # a ModelOutput (return_dict=True, as the VLM forwards ask)
            kept = {key: value for key, value in output.items() if key not in _ENCODER_FIELDS_DROPPED}
            store[number] = type(output)(**kept)
        return output

    owner.get_image_features = keeping
    try:
        yield
    finally:
        if had_instance_attribute:
            owner.get_image_features = original
        else:
            del owner.get_image_features


def batch_answer_nll(model: nn.Module, batch: CalibrationBatch, encoder_output: object | None = None,
                     ) -> tuple[torch.Tensor, int]:
    """(sum of the answer tokens' NLL in float32, number of answer tokens) for one batch; with
    `encoder_output` (the batch's kept image-encoder output) the encoder is not run."""
    columns, targets, mask = answer_positions(batch)
    count = int(mask.sum())
    if count == 0:
        return torch.zeros((), dtype=torch.float32, device=targets.device), 0
    inputs = {**batch.inputs, "use_cache": False}
    if encoder_output is not None:
        inputs.pop("pixel_values")
        inputs["mm_encoder_outputs"] = {"image": encoder_output}
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=columns).logits
    else:
        logits = model(**inputs).logits[:, columns]
    log_probs = F.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return -log_probs[mask].sum(), count


def count_answer_tokens(batches: Sequence[CalibrationBatch]) -> int:
    """Answer tokens the loss is averaged over (positions 1.. of each answer mask)."""
    return sum(int(answer_positions(b)[2].sum()) for b in batches)


@dataclass
class Resume:
    """Start the decoder at `layer` from stored streams instead of from the input (docs/design.md §2.5).

    `streams[b]` is the residual stream entering `layer` for calibration batch b in the model being
    measured; every layer below `layer` is bypassed (not computed), so a pass costs the layers from
    `layer` up plus the embeddings (the image encoder's output is reused after the first pass).
    `layer` itself may be bypassed (the trial that removes it): the stream then passes through it to
    the next layer.
    """

    layer: int
    streams: list[torch.Tensor]


@contextlib.contextmanager
def _resume_and_record(context: ScoringContext, resume: Resume | None, record: Sequence[int],
                       current: list[int], recorded: dict[int, list[torch.Tensor]]) -> Iterator[None]:
    """Hooks that swap in the stored stream at `resume.layer` and keep the streams entering `record`."""
    handles = []

    def replace(module, args, kwargs):
        stored = resume.streams[current[0]]
        hidden = layer_input(args, kwargs)
        stored = stored.to(device=hidden.device, dtype=hidden.dtype)
        if args:
            return (stored, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": stored}

    def keep(module, args, kwargs, index):
        recorded[index].append(layer_input(args, kwargs).detach().to("cpu", copy=True))

    try:
        if resume is not None:
            handles.append(context.adapter.layers[resume.layer].register_forward_pre_hook(replace, with_kwargs=True))
        for index in record:  # registered after `replace`: a recorded resume layer keeps the stored stream
            handles.append(context.adapter.layers[index].register_forward_pre_hook(
                functools.partial(keep, index=index), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def answer_loss_streams(context: ScoringContext, skip: Sequence[int] = (), *, resume: Resume | None = None,
                        record: Sequence[int] = (), progress_bar: tqdm | None = None,
                        on_batch: Callable[[int, CalibrationBatch], None] | None = None,
                        ) -> tuple[float, dict[int, list[torch.Tensor]]]:
    """`answer_loss`, started from stored streams (`resume`), keeping the streams entering the `record`
    layers (per calibration batch, on the CPU) for later passes to start from. `on_batch(number, batch)` is
    called before each batch runs (the batch on the model's input device, its masks over the positions
    the layers see), for hooks that collect statistics during the pass."""
    device = input_device(context.model)
    total, count = 0.0, 0
    below = range(resume.layer) if resume is not None else ()
    if resume is not None and len(resume.streams) != len(context.batches):
        raise ValueError(f"{len(resume.streams)} stored streams for {len(context.batches)} calibration batches")
    if resume is not None and any(index < resume.layer for index in record):
        raise ValueError(f"cannot record below layer {resume.layer}, where the pass starts")
    recorded: dict[int, list[torch.Tensor]] = {index: [] for index in record}
    current = [0]
    owner = _encoder_owner(context.model) if context.reuse_encoder else None
    with bypass_layers(context.adapter, {*skip, *below}), _resume_and_record(context, resume, record, current,
                                                                            recorded):
        for number, batch in enumerate(context.batches):
            current[0] = number
            kept = context.encoder_outputs.get(number) if owner is not None else None
            keeping = (_keep_encoder_output(owner, context.encoder_outputs, number)
                       if owner is not None and kept is None and "pixel_values" in batch.inputs
                       else contextlib.nullcontext())
            on_device = batch.to(device)
            if on_batch is not None:
                on_batch(number, on_device.at_layers())
            with keeping:
                nll, tokens = batch_answer_nll(context.model, on_device, kept)
            total += float(nll)
            count += tokens
            if progress_bar is not None:
                progress_bar.update(1)
    if count == 0:
        raise ScoringError("the calibration set has no answer tokens; loss-based scorers need answers")
    loss = total / count
    if not math.isfinite(loss):
        raise ScoringError(
            f"the answer loss is {loss} with layers {sorted(skip)} bypassed (numerical overflow); "
            "load the model in bfloat16 or float32 (--dtype) instead of float16"
        )
    return loss, recorded


def answer_loss(context: ScoringContext, skip: Sequence[int] = (), *, progress_bar: tqdm | None = None) -> float:
    """Mean NLL per answer token over the calibration set with the `skip` layers bypassed (not computed)."""
    return answer_loss_streams(context, skip, progress_bar=progress_bar)[0]
