"""A scored plan fits only its model: layer count, config and, where recorded, the weights scored on."""

from __future__ import annotations

import pytest
import torch

from shortlvlm import get_adapter, load
from shortlvlm.errors import InvalidLayerSelectionError
from shortlvlm.io.load import load_skeleton
from shortlvlm.plan import Plan, PlanError
from shortlvlm.pruning import Provenance, prune, score
from shortlvlm.scoring import get_scorer
from shortlvlm.selection import check_plan_matches, check_removal


@pytest.fixture(scope="module")
def toy_plan() -> Plan:
    model, processor = load("toy")
    return score(model, processor, scorer=get_scorer("last"), provenance=Provenance(source="toy"))


def other_weights():
    """The toy with one weight changed: the same config, other weights."""
    model, processor = load("toy")
    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 0.5
    return model, processor


def test_a_plan_scored_on_other_weights_with_the_same_config_is_refused(toy_plan):
    model, processor = other_weights()
    adapter = get_adapter(model)
    recorded = toy_plan.model.get("weights")
    with pytest.raises(PlanError, match=rf"scored on other weights of this config \(toy, weights hash "
                                        rf"{recorded}; this model's is [0-9a-f]{{16}}\).*--plan-other-weights"):
        check_plan_matches(toy_plan, model, adapter)
    with pytest.raises(PlanError, match="other weights"):
        prune(model, processor, 0.25, compensation=None, plan=toy_plan)
    assert adapter.num_layers == 16  # refused before any layer went

    check_plan_matches(toy_plan, model, adapter, allow_other_weights=True)
    _, pruned = prune(model, processor, 0.25, compensation=None, plan=toy_plan,
                      provenance=Provenance(allow_other_weights=True))
    assert pruned.removed_layers == sorted(toy_plan.params["removal_order"][:4])


def test_the_plan_fits_a_fresh_load_of_the_same_weights_and_the_skeleton(toy_plan):
    model, processor = load("toy")
    check_plan_matches(toy_plan, model, get_adapter(model))
    _, pruned = prune(model, processor, 0.25, compensation=None, plan=toy_plan)
    assert len(pruned.removed_layers) == 4
    skeleton = load_skeleton("toy")  # no weights before the load: the weights are checked after it
    assert check_removal(skeleton, get_adapter(skeleton), 0.25, toy_plan) == 4


def test_a_plan_without_a_weights_record_is_accepted_as_before(toy_plan):
    model, _ = other_weights()
    record = {k: v for k, v in toy_plan.model.items() if k != "weights"}
    old = Plan.from_dict({**toy_plan.to_dict(), "model": record})
    check_plan_matches(old, model, get_adapter(model))


def test_a_plan_with_removal_sets_uses_them_and_an_empty_mapping_falls_back_to_the_order():
    from shortlvlm.selection import planned_removal

    base = {"method": "angular", "num_layers_before": 8, "removed_layers": []}
    blocks = Plan.from_dict({**base, "params": {"removal_order": [1, 2, 3], "removal_sets": {"2": [5, 6]}}})
    assert planned_removal(blocks, 2) == [5, 6]
    with pytest.raises(PlanError, match="removal sets for 2 layers, not 3"):
        planned_removal(blocks, 3)
    empty = Plan.from_dict({**base, "params": {"removal_order": [4, 1, 2], "removal_sets": {}}})
    assert planned_removal(empty, 2) == [4, 1]


@pytest.mark.parametrize(("params", "message"), [
    ({}, "no valid params.removal_order"),
    ({"removal_order": None}, "no valid params.removal_order"),
    ({"removal_order": [1, 1]}, "no valid params.removal_order"),
    ({"removal_order": [1, 2], "removal_sets": [[1, 2]]}, "removal_sets must map each count"),
    ({"removal_order": [1, 2], "removal_sets": {"2": [1]}}, "removal_sets must map each count"),
    ({"removal_order": [1, 2], "removal_sets": {"1": [3], "2": [1]}}, "removal_sets must map each count"),
    ({"removal_order": [1, 2], "removal_sets": {"x": [3]}}, "removal_sets must map each count"),
    ({"removal_order": [1, True]}, "no valid params.removal_order"),
    ({"removal_order": [1, 16]}, "no valid params.removal_order"),
    ({"removal_order": [-1]}, "no valid params.removal_order"),
])
def test_a_plan_without_a_readable_ranking_is_refused_with_the_fix(toy_plan, params, message):
    model, _ = load("toy")
    broken = Plan.from_dict({**toy_plan.to_dict(), "params": params})
    with pytest.raises(PlanError, match=message):
        check_plan_matches(broken, model, get_adapter(model))


def test_a_ratio_may_remove_every_layer_but_one():
    from shortlvlm.selection import layers_to_remove

    model, _ = load("toy")
    adapter = get_adapter(model)
    total = adapter.num_layers
    assert layers_to_remove((total - 1.4) / total, adapter) == total - 1
    with pytest.raises(InvalidLayerSelectionError, match=f"would remove {total} of {total} layers, but at most "
                                                          f"{total - 1} can go"):
        layers_to_remove((total - 0.4) / total, adapter)


def test_a_plan_with_valid_removal_sets_and_edge_layers_is_accepted(toy_plan):
    model, _ = load("toy")
    params = {"removal_order": [15, 0, 1], "removal_sets": {"1": [15], "2": [0, 1]}}
    check_plan_matches(Plan.from_dict({**toy_plan.to_dict(), "params": params}), model, get_adapter(model))


def test_the_smallest_ratio_that_removes_one_layer_is_accepted():
    from shortlvlm.selection import layers_to_remove

    model, _ = load("toy")
    adapter = get_adapter(model)
    assert layers_to_remove(0.5 / adapter.num_layers + 1e-9, adapter) == 1
    with pytest.raises(InvalidLayerSelectionError, match="removes no layer"):
        layers_to_remove(0.4 / adapter.num_layers, adapter)
