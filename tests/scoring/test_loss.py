"""The answer-token loss the loss-based scorers share, against transformers' own loss."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.scoring.conftest import labels_for

from shortlvlm import drop_layers
from shortlvlm.scoring import ScoringError
from shortlvlm.scoring import loss as loss_module
from shortlvlm.scoring.loss import Resume, answer_loss, answer_loss_streams, count_answer_tokens


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
