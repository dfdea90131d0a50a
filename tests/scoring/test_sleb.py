"""SLEB's greedy removal against an exhaustive search over truly dropped models."""

from __future__ import annotations

import pytest
import torch
from tests.scoring.conftest import forbid_model_copies
from tests.scoring.test_ppl import dropped_perplexity

from shortlvlm.data.calibration_set import Calibration, CalibrationSet
from shortlvlm.plan import PlanError
from shortlvlm.pruning import score
from shortlvlm.scoring import SLEB, get_scorer
from shortlvlm.selection import planned_removal


def test_first_pick_equals_exhaustive_single_removal_search(make_context):
    context = make_context(dtype=torch.float64)
    ranking = get_scorer("sleb").rank(context, 1)
    exhaustive = {layer: dropped_perplexity(context, [layer]) for layer in range(6)}
    assert ranking.order == [min(exhaustive, key=exhaustive.get)]
    for layer, value in exhaustive.items():
        assert ranking.scores[layer] == pytest.approx(value, rel=1e-9)


def test_greedy_steps_equal_naive_greedy_on_dropped_models(make_context):
    context = make_context("qwen2_vl", dtype=torch.float64)
    ranking = get_scorer("sleb").rank(context, 3)
    chosen: list[int] = []
    for _ in range(3):
        trials = {layer: dropped_perplexity(context, [*chosen, layer]) for layer in range(6) if layer not in chosen}
        chosen.append(min(trials, key=trials.get))
    assert ranking.order == chosen
    assert [step["removed"] for step in ranking.details["greedy_steps"]] == chosen


def test_a_plan_ranks_only_the_requested_count(make_context, monkeypatch):
    context = make_context()
    forbid_model_copies(monkeypatch, "sleb")
    encoded = CalibrationSet(Calibration(), ()).with_batches(context.batches)
    plan = score(context.model, None, scorer=SLEB(), calibration=encoded, num_remove=2, adapter=context.adapter)
    assert len(plan.params["removal_order"]) == 2
    assert planned_removal(plan, 2) == plan.params["removal_order"]
    with pytest.raises(PlanError, match="ranks only 2"):
        planned_removal(plan, 3)


def test_a_shorter_ranking_is_the_start_of_a_longer_one(make_context):
    """SLEB's greedy order does not depend on the count (its `order_depends_on_count` is False): ranked for 2,
    it removes the first 2 of its ranking for 4, so `compare`'s cells are `prune --ratio`'s."""
    from shortlvlm.scoring import SLEB

    assert SLEB.order_depends_on_count is False
    context = make_context(num_layers=8)
    assert SLEB().rank(context, 2).order == SLEB().rank(context, 4).order[:2]
