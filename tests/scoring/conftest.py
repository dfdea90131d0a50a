"""Scoring contexts on tiny models, with answer tokens for the loss-based scorers."""

from __future__ import annotations

import pytest
import torch

from shortlvlm import get_adapter
from shortlvlm.capture import batch_from_inputs
from shortlvlm.scoring import ScoringContext
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model

ANSWER_TOKENS = 4


def with_answers(context: ScoringContext, count: int = ANSWER_TOKENS) -> ScoringContext:
    """Mark each row's last `count` tokens (text in every tiny batch) as its answer."""
    for batch in context.batches:
        answer = torch.zeros_like(batch.valid)
        answer[:, -count:] = True
        assert not (answer & batch.image).any()
        batch.answer = answer & batch.valid
    return context


def forbid_model_copies(monkeypatch, scorer: str) -> None:
    """Make copy.deepcopy of any nn.Module fail the test (peers copy the model per trial; we must not)."""
    import copy

    original = copy.deepcopy

    def guarded(value, *args, **kwargs):
        if isinstance(value, torch.nn.Module):
            pytest.fail(f"{scorer} deep-copied a module")
        return original(value, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", guarded)


def labels_for(batch) -> torch.Tensor:
    """transformers-style labels: the answer tokens, -100 elsewhere."""
    labels = batch.inputs["input_ids"].clone()
    labels[~batch.answer] = -100
    return labels


@pytest.fixture
def make_context():
    def build(model_type: str = "llava", num_layers: int = 6, *, dtype=torch.float32, answers: bool = True,
              seed: int = 0, unpadded: bool | None = None) -> ScoringContext:
        # transformers' float64 kernels turn fully padded rows into NaN that leaks into real tokens,
        # so float64 references run on unpadded batches (padding is covered in float32).
        torch.manual_seed(seed)
        model = tiny_model(model_type, num_layers).to(dtype)
        adapter = get_adapter(model)
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tiny_inputs(model.config).items()}
        if unpadded if unpadded is not None else dtype == torch.float64:
            inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
        context = ScoringContext(model, adapter, [batch_from_inputs(adapter, inputs)])
        return with_answers(context) if answers else context
    return build
