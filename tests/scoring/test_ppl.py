"""Shortened LLaMA's PPL criterion against perplexities of truly dropped models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tests.scoring.conftest import forbid_model_copies, labels_for

from shortlvlm import drop_layers
from shortlvlm.scoring import get_scorer


def dropped_perplexity(context, layers) -> float:
    model = copy.deepcopy(context.model)
    if layers:
        drop_layers(model, layers)
    batch = context.batches[0]
    with torch.no_grad():
        return math.exp(float(model(**batch.inputs, labels=labels_for(batch), use_cache=False).loss))


@pytest.mark.parametrize("model_type", ["llava", "gemma3"])
def test_scores_are_the_perplexities_of_the_dropped_models(make_context, model_type):
    context = make_context(model_type, dtype=torch.float64)
    ranking = get_scorer("ppl").rank(context, 2)
    for layer in range(context.adapter.num_layers):
        assert ranking.scores[layer] == pytest.approx(dropped_perplexity(context, [layer]), rel=1e-9)
    assert ranking.order == sorted(range(6), key=lambda i: ranking.scores[i])
    assert ranking.details["base_perplexity"] == pytest.approx(dropped_perplexity(context, []), rel=1e-9)


def test_the_model_is_not_copied_per_trial(make_context, monkeypatch):
    context = make_context()
    forbid_model_copies(monkeypatch, "ppl")
    get_scorer("ppl").rank(context, 1)
