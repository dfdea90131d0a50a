"""tis-cosine ranking (one-shot and iterative), in-place layer bypass, and the sanity-floor scorers."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.references import (
    eager_llava,
    layer_streams,
    llava_rows,
    naive_important,
    right_padded,
    shared_prefix,
)

from shortlvlm import drop_layers, get_adapter
from shortlvlm.capture import CaptureError, batch_from_inputs, bypass_layers, capture
from shortlvlm.importance import TIS
from shortlvlm.scoring import ScoringContext, ScoringError, get_scorer
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model


def context_for(model_type="llava", num_layers=6):
    model = tiny_model(model_type, num_layers)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    return ScoringContext(model, adapter, [batch])


@pytest.mark.parametrize("tokens", ["important", "all"])
def test_one_shot_order_sorts_layers_by_similarity(tokens):
    context = context_for()
    ranking = get_scorer("tis-cosine", tis=TIS(tokens=tokens)).rank(context, 2)
    assert sorted(ranking.order) == list(range(6))
    ordered = [ranking.scores[i] for i in ranking.order]
    assert ordered == sorted(ordered, reverse=True)
    assert all(-1 <= s <= 1 for s in ranking.scores)


def test_tokens_choice_changes_the_statistic():
    context = context_for()
    important = get_scorer("tis-cosine", tis=TIS(tokens="important", top_p=0.2)).rank(context, 2).scores
    everything = get_scorer("tis-cosine", tis=TIS(tokens="all")).rank(context, 2).scores
    assert important != everything


def test_protected_deepstack_layers_are_never_ranked():
    context = context_for("qwen3_vl")
    ranking = get_scorer("tis-cosine").rank(context, 3)
    assert set(ranking.order) == set(range(2, 6))


def test_bypass_equals_dropping_the_layers():
    context = context_for()
    batch = context.batches[0]
    reference = copy.deepcopy(context.model)
    drop_layers(reference, [1, 3])
    with torch.no_grad():
        expected = reference(**batch.inputs, use_cache=False).logits
        with bypass_layers(context.adapter, [1, 3]):
            got = context.model(**batch.inputs, use_cache=False).logits
        untouched = context.model(**batch.inputs, use_cache=False).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(untouched, expected)  # the hooks were removed afterwards


def test_iterative_second_pick_equals_rescoring_the_dropped_model():
    context = context_for()
    scorer = get_scorer("tis-cosine", iterative=True)
    ranking = scorer.rank(context, 2)
    first, second = ranking.order
    assert first == get_scorer("tis-cosine").rank(context, 2).order[0]
    reference = copy.deepcopy(context.model)
    drop_layers(reference, [first])
    ref_context = ScoringContext(reference, get_adapter(reference), context.batches)
    ref_order = get_scorer("tis-cosine").rank(ref_context, 1).order
    kept = [i for i in range(6) if i != first]
    assert second == kept[ref_order[0]]
    assert ranking.details["iterative_steps"][0]["removed"] == first


def test_non_finite_activations_name_the_layer():
    context = context_for()
    with torch.no_grad():
        context.adapter.layers[2].mlp.down_proj.weight.fill_(float("inf"))
    with pytest.raises(CaptureError, match="decoder layer 2 produced NaN/Inf"):
        get_scorer("tis-cosine").rank(context, 1)


def test_last_and_random_floors():
    context = context_for()
    assert get_scorer("last").rank(context, 2).order[:2] == [4, 3]
    first = get_scorer("random", seed=1).rank(context, 2).order
    assert first == get_scorer("random", seed=1).rank(context, 2).order
    assert 0 not in first and 5 not in first and sorted(first) == [1, 2, 3, 4]


def test_unknown_scorer_and_bad_parameters():
    with pytest.raises(ScoringError, match="unknown scoring method"):
        get_scorer("magic")
    with pytest.raises(ScoringError, match=r"TIS\.top_p \(--tis-top-p\) must be in \(0, 1\]"):
        get_scorer("tis-cosine", tis=TIS(top_p=0))
    with pytest.raises(ScoringError, match="bad parameter"):
        get_scorer("tis-cosine", rank=3)


def test_capture_collects_only_probe_layers_attention():
    context = context_for()
    original = context.model.config._attn_implementation
    assert original != "eager"  # capture must switch to eager to see probabilities, then restore
    seen = []

    class Spy:
        def begin_batch(self, batch): pass
        def attention(self, layer, probs, allowed): seen.append((layer, probs.shape, bool(allowed.any())))
        def layer_output(self, layer, h_in, h_out): pass
        def end_batch(self): pass

    capture(context.model, context.adapter, context.batches, Spy(), attention_layers=[0, 4])
    batch, length = context.batches[0].inputs["input_ids"].shape
    assert seen == [(0, (batch, length, length), True), (4, (batch, length, length), True)]
    assert context.model.config._attn_implementation == original


def test_toy_chat_template_is_found_and_left_out_of_the_important_tokens():
    from shortlvlm import load
    from shortlvlm.data.calibration import toy_calibration
    from shortlvlm.data.encode import encode_calibration
    from shortlvlm.importance import template_length

    model, processor = load("toy")
    adapter = get_adapter(model)
    batches = encode_calibration(toy_calibration()[:16], processor, adapter)
    length = template_length(batches)
    first = batches[0].inputs["input_ids"][0, :length].tolist()
    assert processor.tokenizer.convert_ids_to_tokens(first) == ["<s>", "USER", ":"]
    context = ScoringContext(model, adapter, batches)
    skipped = get_scorer("tis-cosine").rank(context, 5)
    kept = get_scorer("tis-cosine", tis=TIS(skip_template=False)).rank(context, 5)
    assert skipped.details["template_tokens_skipped"] == 3 and kept.details["template_tokens_skipped"] == 0
    assert skipped.scores != kept.scores
    # "all" tokens (the ablation without TIS) is untouched by the option
    assert get_scorer("tis-cosine", tis=TIS(tokens="all")).rank(context, 5).scores == pytest.approx(
        get_scorer("tis-cosine", tis=TIS(tokens="all", skip_template=False)).rank(context, 5).scores)


def test_default_scores_average_per_sample_over_unequal_batches():
    """Five samples of different lengths in batches of 2, 2 and 1 (right padding, a partial last batch): each
    layer's score is the mean over samples of the mean cosine over the sample's important tokens, computed
    here one unpadded sample at a time (float64), with TIS rebuilt from output_attentions."""
    model = eager_llava()
    adapter = get_adapter(model)
    image_id = model.config.image_token_id
    samples = llava_rows(model, [1, 2, 3, 1, 2], [4, 9, 6, 7, 3], seed=3)
    batches = [right_padded(model, samples[i:i + 2]) for i in range(0, len(samples), 2)]
    assert [b.valid.shape[0] for b in batches] == [2, 2, 1] and not batches[0].valid.all()
    template = shared_prefix(samples, image_id)
    per_sample, visual = [], []
    for sample in samples:
        with torch.no_grad():
            out = model(**sample, output_attentions=True, use_cache=False)
        mask = naive_important(out, sample["input_ids"], image_id, template)[0]
        visual.append(float((sample["input_ids"][0] == image_id)[mask].sum() / mask.sum()))
        per_sample.append([float(torch.nn.functional.cosine_similarity(h_in[0], h_out[0], dim=-1)[mask].mean())
                           for h_in, h_out in layer_streams(model, sample)])
    expected = [sum(column) / len(samples) for column in zip(*per_sample, strict=True)]
    ranking = get_scorer("tis-cosine").rank(ScoringContext(model, adapter, batches), 1)
    assert ranking.scores == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the reported share of image tokens among the important ones: a mean over samples too
    assert ranking.details["visual_share_of_important_tokens"] == pytest.approx(sum(visual) / len(visual), rel=1e-9)


def test_per_sample_mean_counts_every_sample_with_a_selected_token():
    """Rows with 0, 1 and 3 selected tokens: the mean over each row's selection, and which rows have one (a
    sample with a single important token is a sample; one with none is left out, not averaged in as 0)."""
    from shortlvlm.scoring.tis_cosine import _per_sample_mean

    values = torch.tensor([[0.5, 0.25, 0.75, 0.1], [0.9, 0.2, 0.3, 0.4], [0.3, 0.6, 0.9, 0.8]], dtype=torch.float64)
    mask = torch.tensor([[False] * 4, [False, True, False, False], [True, False, True, True]])
    means, present = _per_sample_mean(values, mask)
    assert present.tolist() == [False, True, True]
    assert means[present].tolist() == pytest.approx([0.2, (0.3 + 0.9 + 0.8) / 3], rel=1e-15)


def test_order_by_puts_missing_scores_last_and_breaks_ties_by_index():
    from shortlvlm.scoring.base import order_by

    scores = [0.5, None, float("nan"), 0.5, 0.1, 0.9]
    assert order_by(scores, list(range(6)), descending=False) == [4, 0, 3, 5, 1, 2]
    assert order_by(scores, list(range(6)), descending=True) == [5, 0, 3, 4, 1, 2]
    assert order_by(scores, [5, 2, 0], descending=False) == [0, 5, 2]


def test_scorers_round_trip_through_the_plan_record_and_bad_records_are_refused():
    from shortlvlm.scoring import TISLoss, scorer_from_dict, scorer_to_dict

    for scorer in (get_scorer("tis-cosine", iterative=True), TISLoss(bridge=False, full_steps=2), get_scorer("last")):
        assert scorer_from_dict(scorer_to_dict(scorer)) == scorer
    old = {k: v for k, v in scorer_to_dict(TISLoss()).items() if k != "bridge"}  # recorded before the option
    assert scorer_from_dict(old).bridge is False
    for bad in ({"name": "nope"}, ["tis-loss"], {"iterative": True}, None):
        with pytest.raises(ScoringError, match="the plan's scorer must name one of"):
            scorer_from_dict(bad)


def test_random_order_is_seeded_and_seed_zero_is_the_default():
    context = context_for(num_layers=8)
    default = get_scorer("random").rank(context, 3).order
    assert default == get_scorer("random", seed=0).rank(context, 3).order
    assert sorted(default) == list(range(1, 7))
    assert any(get_scorer("random", seed=s).rank(context, 3).order != default for s in (1, 2, 3))
