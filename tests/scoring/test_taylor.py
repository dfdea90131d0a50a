"""Shortened LLaMA's Taylor+ criterion against autograd on transformers' own loss."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.scoring.conftest import labels_for

from shortlvlm import get_adapter
from shortlvlm.scoring import ScoringError, get_scorer


def reference_importance(context) -> list[float]:
    model = copy.deepcopy(context.model)
    batch = context.batches[0]
    model.zero_grad()
    model(**batch.inputs, labels=labels_for(batch), use_cache=False).loss.backward()
    return [sum(float((p.detach() * p.grad).abs().sum()) for name, p in layer.named_parameters()
                if name.endswith("weight")) for layer in get_adapter(model).layers]


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl"])
def test_importance_equals_autograd_on_the_models_own_loss(make_context, model_type):
    context = make_context(model_type, dtype=torch.float64)
    ranking = get_scorer("taylor", keep_first=0, keep_last=0).rank(context, 2)
    assert ranking.scores == pytest.approx(reference_importance(context), rel=1e-8)
    assert ranking.order == sorted(range(6), key=lambda i: ranking.scores[i])


def test_zeroed_weights_have_no_importance_and_go_first(make_context):
    context = make_context()
    with torch.no_grad():
        for name, p in context.adapter.layers[2].named_parameters():
            if name.endswith("weight"):
                p.zero_()
    ranking = get_scorer("taylor", keep_first=0, keep_last=0).rank(context, 1)
    assert ranking.scores[2] == 0.0
    assert ranking.order[0] == 2


def test_plus_heuristic_keeps_the_first_and_last_layers(make_context):
    context = make_context()
    ranking = get_scorer("taylor", keep_first=2, keep_last=1).rank(context, 1)
    assert sorted(ranking.order) == [2, 3, 4]


@pytest.mark.parametrize(("first", "last", "order"), [(0, 6, []), (0, 9, []), (1, 5, []), (0, 5, [0]), (5, 0, [5])])
def test_keep_counts_as_large_as_the_model_keep_every_layer(make_context, first, last, order):
    """The kept ends cover the whole model (6 layers): nothing is left to rank; one short of it, one layer."""
    ranking = get_scorer("taylor", keep_first=first, keep_last=last).rank(make_context(), 1)
    assert ranking.order == order


def test_gradients_and_requires_grad_are_restored(make_context):
    context = make_context()
    frozen = next(context.model.parameters())
    frozen.requires_grad_(False)
    get_scorer("taylor").rank(context, 1)
    assert all(p.grad is None for p in context.model.parameters())
    assert not frozen.requires_grad
    assert sum(p.requires_grad for p in context.model.parameters()) == sum(1 for _ in context.model.parameters()) - 1


def test_bad_keep_counts_are_refused():
    with pytest.raises(ScoringError, match="keep_first"):
        get_scorer("taylor", keep_first=-1)
