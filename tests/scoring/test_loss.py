"""The answer-token loss the loss-based scorers share, against transformers' own loss."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from tests.scoring.conftest import labels_for

from shortlvlm import drop_layers
from shortlvlm.scoring import ScoringError
from shortlvlm.scoring import loss as loss_module
from shortlvlm.scoring.loss import Resume, answer_loss, answer_loss_streams, count_answer_tokens
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES


def transformers_loss(model, batch) -> float:
    with torch.no_grad():
        return float(model(**batch.inputs, labels=labels_for(batch), use_cache=False).loss)


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3", "idefics3"])
def test_answer_loss_equals_the_models_own_loss(make_context, model_type):
    # float32: transformers' float64 kernels turn the fully padded rows of left padding into NaN.
    context = make_context(model_type)
    expected = transformers_loss(context.model, context.batches[0])
    assert answer_loss(context) == pytest.approx(expected, rel=1e-5)


def test_without_logits_to_keep_the_full_logits_give_the_same_loss(make_context, monkeypatch):
    context = make_context(dtype=torch.float64)
    kept = answer_loss(context)
    monkeypatch.setattr(loss_module, "_accepts_logits_to_keep", lambda model: False)
    assert answer_loss(context) == pytest.approx(kept, rel=1e-12)


def test_bypassed_layers_give_the_loss_of_the_dropped_model(make_context):
    context = make_context(dtype=torch.float64)
    reference = copy.deepcopy(context.model)
    drop_layers(reference, [1, 4])
    assert answer_loss(context, [1, 4]) == pytest.approx(transformers_loss(reference, context.batches[0]), rel=1e-9)
    assert answer_loss(context) != pytest.approx(answer_loss(context, [1, 4]))


def test_answer_tokens_are_counted_from_the_second_position(make_context):
    context = make_context()
    assert count_answer_tokens(context.batches) == 2 * 4


def test_calibration_without_answers_is_refused(make_context):
    context = make_context(answers=False)
    with pytest.raises(ScoringError, match="answer"):
        answer_loss(context)


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3", "idefics3"])
def test_a_pass_started_from_recorded_streams_gives_the_full_pass_loss(make_context, model_type):
    context = make_context(model_type, dtype=torch.float64)
    full, recorded = answer_loss_streams(context, [1], record=[2, 4])
    assert full == answer_loss(context, [1])
    assert set(recorded) == {2, 4} and len(recorded[2]) == len(context.batches)
    for layer in (2, 4):
        resumed, _ = answer_loss_streams(context, [1], resume=Resume(layer, recorded[layer]))
        assert resumed == pytest.approx(full, rel=1e-12)
    # the start layer itself bypassed (the trial removing it): its stored input passes through
    assert answer_loss_streams(context, [1, 4], resume=Resume(4, recorded[4]))[0] == pytest.approx(
        answer_loss(context, [1, 4]), rel=1e-12)
    # the stored streams are what the pass runs on
    shifted = [stream + 1.0 for stream in recorded[4]]
    assert answer_loss_streams(context, [1], resume=Resume(4, shifted))[0] != pytest.approx(full, rel=1e-6)


def test_recording_below_the_start_is_refused(make_context):
    context = make_context()
    _, recorded = answer_loss_streams(context, record=[3])
    with pytest.raises(ValueError, match="below layer 3"):
        answer_loss_streams(context, resume=Resume(3, recorded[3]), record=[2])


def _encoder_calls(model) -> list[int]:
    """A counter of the image encoder's runs (its vision module's forward)."""
    calls = [0]
    vision = next(getattr(model.model, name) for name in ("vision_tower", "visual", "vision_model")
                  if hasattr(model.model, name))
    vision.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_later_passes_reuse_the_image_encoder_output_and_give_the_same_loss(make_context, model_type):
    context = make_context(model_type)
    calls = _encoder_calls(context.model)
    first = answer_loss(context, [1])
    assert calls[0] == 1 and set(context.encoder_outputs) == {0}
    kept = context.encoder_outputs[0]
    assert kept.pooler_output is not None and getattr(kept, "hidden_states", None) is None
    assert answer_loss(context, [1]) == first and answer_loss(context) == answer_loss(
        dataclasses.replace(context, reuse_encoder=False, encoder_outputs={}))
    assert calls[0] == 2  # the reused passes did not run the encoder; the one with reuse off did
    assert answer_loss(context, [1, 2]) != first  # the kept output feeds a pass that still changes with the skip
    assert "get_image_features" not in context.model.model.__dict__  # the keeping wrapper came off


def test_a_model_that_cannot_take_encoder_outputs_runs_the_encoder_every_pass(make_context, monkeypatch):
    context = make_context()
    monkeypatch.setattr(loss_module, "_encoder_owner", lambda model: None)
    calls = _encoder_calls(context.model)
    answer_loss(context)
    answer_loss(context)
    assert calls[0] == 2 and context.encoder_outputs == {}


def test_a_pass_may_record_the_layer_it_starts_at_but_not_below(make_context):
    context = make_context("llava", num_layers=6, dtype=torch.float64)
    _, recorded = answer_loss_streams(context, record=[3])
    full, again = answer_loss_streams(context, resume=Resume(3, recorded[3]), record=[3, 4])
    assert full == pytest.approx(answer_loss(context), rel=1e-12)
    assert torch.equal(again[3][0], recorded[3][0])  # the stored stream, kept as it was handed in
    with pytest.raises(ValueError, match="cannot record below layer 3"):
        answer_loss_streams(context, resume=Resume(3, recorded[3]), record=[2])


def test_uneven_answers_one_row_batches_and_batches_without_answers_are_averaged_per_token(make_context):
    """Rows answer at different columns (one of them a single token), a one-row batch, and a batch without
    any answer token: the loss is the mean NLL over every answer token, as transformers computes per batch."""
    context = make_context(dtype=torch.float64)
    (batch,) = context.batches
    text = batch.valid & ~batch.image
    answer = torch.zeros_like(batch.valid)
    answer[0, -4:] = True
    last_text = int(text[1].nonzero().flatten()[-3])  # row 1: one answer token, not in the last column
    answer[1, last_text] = True
    uneven = dataclasses.replace(batch, answer=answer & text)
    one_row = dataclasses.replace(batch, inputs={k: v[:1] if v.shape[:1] == batch.valid.shape[:1] else v
                                                 for k, v in batch.inputs.items()},
                                  valid=batch.valid[:1], image=batch.image[:1], answer=(answer & text)[:1])
    single = dataclasses.replace(batch, inputs={k: v[1:] if v.shape[:1] == batch.valid.shape[:1] else v
                                                for k, v in batch.inputs.items()},
                                 valid=batch.valid[1:], image=batch.image[1:], answer=(answer & text)[1:])
    silent = dataclasses.replace(batch, answer=torch.zeros_like(batch.valid))
    parts = (uneven, one_row, single)
    per_batch = [(transformers_loss(context.model, b), count_answer_tokens([b])) for b in parts]
    assert [count for _, count in per_batch] == [4 + 1, 4, 1]
    expected = sum(loss * count for loss, count in per_batch) / sum(count for _, count in per_batch)
    mixed = dataclasses.replace(context, batches=[uneven, silent, one_row, single])
    assert answer_loss(mixed) == pytest.approx(expected, rel=1e-6)  # the NLL is summed in float32
