"""LaCo's walk (`laco` scorer): the similarities it records against the pruned model `--compensation laco` writes,
its order by hand, the threshold lowering, exact counts, restored weights and refused options."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tests.compensation.test_laco import float64_model

from shortlvlm import LaCo, drop_layers, get_adapter
from shortlvlm.capture import batch_from_inputs
from shortlvlm.compensation import compensate
from shortlvlm.errors import ScoringError
from shortlvlm.methods import resolve_method
from shortlvlm.scoring import LaCoWalk, ScoringContext, get_scorer
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs


def float64_context(model_type="llava", num_layers=8, seed=0, batches=1) -> ScoringContext:
    """compensation/test_laco.py's float64 model (its layers all differ, so every merge changes the output), with
    `batches` unpadded batches: the first its inputs, the others drawn with the next seeds."""
    model, adapter, inputs = float64_model(model_type, num_layers, seed)
    encoded = [batch_from_inputs(adapter, inputs)]
    for number in range(1, batches):
        more = {k: v.double() if v.is_floating_point() else v
                for k, v in tiny_inputs(model.config, batch_size=2, seed=seed + number).items()}
        more["attention_mask"] = torch.ones_like(more["attention_mask"])
        encoded.append(batch_from_inputs(adapter, more))
    return ScoringContext(model, adapter, encoded)


def last_layer_output(model, inputs) -> torch.Tensor:
    """The last decoder layer's output (before the final norm), from a hook."""
    adapter = get_adapter(model)
    seen = {}
    handle = adapter.layers[-1].register_forward_hook(
        lambda module, args, output: seen.update(out=output[0] if isinstance(output, tuple) else output))
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        handle.remove()
    return seen["out"]


def merged_and_cut(model, removed: list[int]):
    """A copy of `model` with `removed` merged into the layers below by LaCo's compensation, then cut."""
    pruned = copy.deepcopy(model)
    adapter = get_adapter(pruned)
    compensate(pruned, adapter, [], removed, LaCo())
    drop_layers(pruned, removed, adapter)
    return pruned


def similarity(reference: torch.Tensor, output: torch.Tensor) -> float:
    return float(F.cosine_similarity(reference, output, dim=-1).mean())


@pytest.mark.parametrize(("merge_size", "count"), [(2, 3), (3, 4)])
def test_each_recorded_similarity_is_that_of_the_model_laco_writes(merge_size, count):
    context = float64_context()
    inputs = context.batches[0].inputs
    reference = last_layer_output(context.model, inputs)
    ranking = LaCoWalk(merge_size=merge_size, threshold=0.0).rank(context, count)
    merges = ranking.details["merges"]
    assert sum(len(m["removed"]) for m in merges) == count and len(ranking.order) == count
    removed: list[int] = []
    for merge in merges:
        assert merge["removed"][0] == merge["into"] + 1  # a run collapsed into the kept layer directly below
        removed += merge["removed"]
        expected = similarity(reference, last_layer_output(merged_and_cut(context.model, removed), inputs))
        assert merge["similarity"] == pytest.approx(expected, rel=1e-10)
        assert merge["similarity"] >= merge["threshold"]
        for layer in merge["removed"]:
            assert ranking.scores[layer] == merge["similarity"]
    assert ranking.order == removed
    kept_scores = [ranking.scores[i] for i in range(8) if i not in removed]
    assert all(score != score for score in kept_scores)  # NaN where nothing was removed


def test_the_walk_goes_down_from_the_top_and_each_layer_merges_once(make_context):
    context = make_context(answers=False)  # 6 layers; the last is never removed
    ranking = LaCoWalk(merge_size=2, threshold=-1.0).rank(context, 2)
    # [4, 5]: 5 is the last layer; [3, 4] merges 4 into 3; [2, 3] holds 3; [1, 2] merges 2 into 1
    assert ranking.order == [4, 2]
    assert [(m["into"], m["removed"]) for m in ranking.details["merges"]] == [(3, [4]), (1, [2])]
    assert ranking.details["walks"] == 1 and ranking.details["merges_tried"] == 2


@pytest.mark.parametrize(("count", "expected"), [(2, [(4, [5, 6])]), (3, [(3, [4, 5, 6])]),
                                                 (4, [(3, [4, 5, 6]), (1, [2])])])
def test_the_last_merge_takes_only_the_layers_still_needed(make_context, count, expected):
    context = make_context(num_layers=8, answers=False)  # [p, ..., 7]: 7 is the last layer, never removed
    ranking = LaCoWalk(merge_size=4, threshold=-1.0).rank(context, count)
    assert [(m["into"], m["removed"]) for m in ranking.details["merges"]] == expected
    assert len(ranking.order) == count


def test_a_walk_that_ends_short_lowers_the_threshold_and_walks_again():
    context = float64_context()
    ranking = LaCoWalk(merge_size=2, threshold=1.0, threshold_step=0.25).rank(context, 3)
    merges = ranking.details["merges"]
    assert len(ranking.order) == 3 and ranking.details["walks"] >= 2
    thresholds = [m["threshold"] for m in merges]
    assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] < 1.0
    assert all(m["similarity"] >= m["threshold"] for m in merges)
    assert ranking.details["final_threshold"] == pytest.approx(thresholds[-1])


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_every_architecture_walks_and_gets_its_weights_back(make_context, model_type):
    context = make_context(model_type, answers=False)
    before = {name: p.detach().clone() for name, p in context.model.named_parameters()}
    ranking = LaCoWalk(merge_size=2, threshold=0.5).rank(context, 2)
    assert len(ranking.order) == 2 and context.adapter.num_layers - 1 not in ranking.order
    for name, parameter in context.model.named_parameters():
        assert torch.equal(parameter, before[name]), name


def test_only_the_first_batches_holding_the_samples_are_run(monkeypatch):
    context = float64_context(batches=3)
    import shortlvlm.scoring.laco as laco_module

    seen = []
    original = laco_module.capture

    def counting(model, adapter, batches, collector, **kwargs):
        seen.append(len(batches))
        return original(model, adapter, batches, collector, **kwargs)

    monkeypatch.setattr(laco_module, "capture", counting)
    ranking = LaCoWalk(samples=3, threshold=-1.0).rank(context, 1)
    assert set(seen) == {2} and ranking.details["samples"] == 4  # two batches of 2 hold at least 3


def test_more_layers_than_the_walk_can_merge_is_a_clear_error(make_context):
    context = make_context(answers=False)
    with pytest.raises(ScoringError, match="can remove only 2 of 4 layers"):
        LaCoWalk(merge_size=2, threshold=-1.0).rank(context, 4)


@pytest.mark.parametrize(("field", "value"), [("merge_size", 1), ("merge_size", 2.5), ("threshold", 1.5),
                                              ("threshold", float("nan")), ("threshold_step", 0),
                                              ("samples", 0)])
def test_bad_options_are_refused(field, value):
    with pytest.raises(ScoringError, match=field):
        get_scorer("laco", **{field: value})


def test_method_laco_means_the_walk_with_its_merge():
    scorer, compensation = resolve_method("laco")
    assert scorer is LaCoWalk and compensation == "laco"
    assert resolve_method("laco", "lstsq") == (LaCoWalk, "lstsq")


def test_skipping_the_walks_that_would_repeat_an_empty_one_changes_nothing(monkeypatch):
    import shortlvlm.scoring.laco as laco_module

    scorer = LaCoWalk(merge_size=2, threshold=1.0, threshold_step=0.05)
    skipped = scorer.rank(float64_context(), 3)
    monkeypatch.setattr(laco_module, "next_threshold", lambda threshold, step, best: threshold - step)
    stepped = scorer.rank(float64_context(), 3)
    assert skipped.order == stepped.order and skipped.details["merges"] == stepped.details["merges"]
    assert skipped.details["walks"] < stepped.details["walks"]
    assert skipped.details["merges_tried"] < stepped.details["merges_tried"]


@pytest.mark.parametrize(("best", "expected"), [(None, 0.55), (0.9, 0.55), (0.55, 0.55), (0.42, 0.4),
                                                (-0.31, -0.35)])
def test_next_threshold_is_the_first_step_at_or_below_the_best_of_an_empty_walk(best, expected):
    from shortlvlm.scoring.laco import next_threshold

    assert next_threshold(0.6, 0.05, best) == pytest.approx(expected, abs=1e-12)


def test_a_non_finite_similarity_is_refused_and_the_weights_put_back(make_context, monkeypatch):
    import shortlvlm.scoring.laco as laco_module

    context = make_context(answers=False)
    before = {name: p.detach().clone() for name, p in context.model.named_parameters()}
    monkeypatch.setattr(laco_module, "stream_similarity", lambda reference, streams: float("nan"))
    with pytest.raises(ScoringError, match="non-finite last-layer output"):
        LaCoWalk().rank(context, 1)
    for name, parameter in context.model.named_parameters():
        assert torch.equal(parameter, before[name]), name
