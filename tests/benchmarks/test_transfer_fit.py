"""benchmarks/transfer_fit.py: its image-token fit counts only the image tokens, and every real one without it."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import transfer_fit

from shortlvlm import LstSq, get_adapter
from shortlvlm.capture import batch_from_inputs
from shortlvlm.importance import ImportanceAwareCollector
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model


def measured_tokens(model, adapter, batch) -> int:
    measured = LstSq(streams="unpruned").measure(model, adapter, [batch], [3])
    return int(measured["tokens.2"])


def test_the_image_token_fit_counts_only_the_real_image_tokens(monkeypatch):
    monkeypatch.setattr(ImportanceAwareCollector, "selected_tokens", ImportanceAwareCollector.selected_tokens)
    model = tiny_model("llava", 6)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    every = measured_tokens(model, adapter, batch)
    transfer_fit.fit_on_image_tokens()
    image = measured_tokens(model, adapter, batch)
    assert every == int(batch.valid.sum()) and image == int((batch.image & batch.valid).sum())
    assert 0 < image < every
    assert torch.equal(batch.image & batch.valid, batch.image)  # image slots are real tokens


def test_the_prompt_and_context_fits_count_the_tokens_before_the_answer(monkeypatch):
    monkeypatch.setattr(ImportanceAwareCollector, "selected_tokens", ImportanceAwareCollector.selected_tokens)
    model = tiny_model("llava", 6)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    answer = torch.zeros_like(batch.valid)
    before = []
    for row in range(batch.valid.shape[0]):
        real = batch.valid[row].nonzero().flatten().tolist()
        answer[row, real[-2:]] = True  # the last two real tokens are the answer
        before.append(len([p for p in real if p < real[-2]]))  # real tokens before it (image included)
    batch.answer = answer
    transfer_fit.fit_before_the_answer(include_last=True)
    prompt = measured_tokens(model, adapter, batch)
    transfer_fit.fit_before_the_answer(include_last=False)
    context = measured_tokens(model, adapter, batch)
    assert prompt == sum(before) and context == sum(before) - len(before)
