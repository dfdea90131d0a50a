"""Streaming TIS and layer similarity against naive float64 computations from full model outputs."""

from __future__ import annotations

import math

import pytest
import torch

from shortlvlm import get_adapter
from shortlvlm.capture import CalibrationBatch, batch_from_inputs, capture
from shortlvlm.importance import (
    TokenImportance,
    important_token_mask,
    select_top,
    template_length,
    template_mask,
)
from shortlvlm.scoring.tis_cosine import LayerSimilarity
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model

TOP_P = 0.4


def naive_tis(attentions, image, text):
    """Per-sample TIS by loops over explicit index sets, from [B, H, T, T] float64 attention maps.

    An entry counts when its probability is > 0 (masked entries are exactly 0 in float64), so
    this does not reuse the model's mask plumbing that the streaming version reads.
    """
    batch, _, length, _ = attentions[0].shape
    scores = torch.full((batch, length), math.nan, dtype=torch.float64)
    for b in range(batch):
        vis = [i for i in range(length) if image[b, i]]
        txt = [i for i in range(length) if text[b, i]]
        per_layer = []
        for layer_attn in attentions:
            a = layer_attn[b].mean(0)
            allowed = (layer_attn[b] > 0).any(0)
            layer_scores = {}

            def mean(entries, a=a, allowed=allowed):
                values = [a[i, j].item() for i, j in entries if allowed[i, j]]
                return sum(values) / len(values) if values else None

            for j in vis + txt:
                if j in vis:
                    parts = [mean([(i, j) for i in vis]), mean([(i, j) for i in txt])]
                else:
                    parts = [mean([(i, j) for i in txt]), mean([(j, k) for k in vis])]
                parts = [p for p in parts if p is not None]
                layer_scores[j] = sum(parts) / len(parts)
            per_layer.append(layer_scores)
        for j in vis + txt:
            scores[b, j] = sum(s[j] for s in per_layer) / len(per_layer)
    return scores


def naive_top(scores, members, top_p):
    mask = torch.zeros_like(members)
    for b in range(members.shape[0]):
        idx = [i for i in range(members.shape[1]) if members[b, i]]
        keep = max(1, math.ceil(top_p * len(idx))) if idx else 0
        for i in sorted(idx, key=lambda i: -scores[b, i].item())[:keep]:
            mask[b, i] = True
    return mask


def tiny_float64(model_type, padded=False):
    """A float64 eager tiny model and batch. Without `padded`, the pad positions become ordinary
    tokens: transformers' eager float64 path turns fully masked rows into NaN that then leaks into
    real tokens (0 * NaN), so padding is covered by the float32 test below."""
    dtype = torch.float32 if padded else torch.float64
    model = tiny_model(model_type, 6).to(dtype)
    model.set_attn_implementation("eager")
    inputs = tiny_inputs(model.config)
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    if not padded:
        inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    return model, inputs


class Recorder(LayerSimilarity):
    """LayerSimilarity that also keeps what it computed per batch, for comparison."""

    def end_batch(self):
        self.last_scores = self.importance.scores().clone()
        self.last_mask = self.importance.mask().clone()
        self.last_cos = {k: v.clone() for k, v in self.cosines.items()}
        super().end_batch()


@pytest.fixture
def streamed_vs_naive(model_type):
    model, inputs = tiny_float64(model_type)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, inputs)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    layers = list(range(adapter.num_layers))
    recorder = Recorder(adapter.num_layers, TokenImportance(layers, TOP_P))
    capture(model, adapter, [batch], recorder, attention_layers=layers)
    return model, adapter, batch, out, recorder


def test_streaming_tis_equals_naive_from_output_attentions(streamed_vs_naive):
    _, adapter, batch, out, recorder = streamed_vs_naive
    assert len(out.attentions) == adapter.num_layers
    expected = naive_tis(out.attentions, batch.image, batch.text)
    members = batch.image | batch.text
    assert batch.image.any() and batch.text.any()
    torch.testing.assert_close(recorder.last_scores[members].double(), expected[members], rtol=1e-6, atol=1e-9)
    assert torch.isnan(recorder.last_scores[~members]).all()
    naive_mask = naive_top(expected, batch.image, TOP_P) | naive_top(expected, batch.text, TOP_P)
    assert torch.equal(recorder.last_mask, naive_mask)


def test_streaming_cosine_equals_stored_hidden_states(streamed_vs_naive):
    model, adapter, batch, out, recorder = streamed_vs_naive
    states = out.hidden_states
    # hidden_states[l+1] is what layer l returned; the last entry is after the final norm, so the
    # last layer is left out. Qwen3-VL adds deepstack features after layers 0..n-1, so the input of
    # layers 1..n is not a stored entry (the hooks see the true input; the entries do not).
    count = len(getattr(model.config.vision_config, "deepstack_visual_indexes", []) or [])
    deepstack = set(range(1, count + 1))
    for layer in range(adapter.num_layers - 1):
        if layer in deepstack:
            continue
        expected = torch.nn.functional.cosine_similarity(states[layer], states[layer + 1], dim=-1)
        torch.testing.assert_close(recorder.last_cos[layer], expected, rtol=1e-10, atol=1e-12)
    # the per-layer statistic: mean over samples of the mean over each sample's important tokens
    mask = recorder.last_mask
    for layer in range(adapter.num_layers):
        per_sample = [recorder.last_cos[layer][b][mask[b]].mean() for b in range(mask.shape[0])]
        assert recorder.similarity("important")[layer] == pytest.approx(float(sum(per_sample) / len(per_sample)),
                                                                         rel=1e-12)
        per_sample_all = [recorder.last_cos[layer][b][batch.valid[b]].mean() for b in range(mask.shape[0])]
        assert recorder.similarity("all")[layer] == pytest.approx(float(sum(per_sample_all) / len(per_sample_all)),
                                                                   rel=1e-12)


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3", "paligemma"])
def test_streaming_tis_with_left_padding_float32(model_type):
    model, inputs = tiny_float64(model_type, padded=True)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, inputs)
    assert not batch.valid[0].all() and batch.valid[1].all()
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, use_cache=False)
    layers = list(range(adapter.num_layers))
    recorder = Recorder(adapter.num_layers, TokenImportance(layers, TOP_P))
    capture(model, adapter, [batch], recorder, attention_layers=layers)
    expected = naive_tis([a.double() for a in out.attentions], batch.image, batch.text)
    members = batch.image | batch.text
    torch.testing.assert_close(recorder.last_scores[members].double(), expected[members], rtol=1e-4, atol=1e-7)
    assert not (recorder.last_mask & ~batch.valid).any()


def test_top_p_selection_per_modality_and_joint():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.8, math.nan]])
    image = torch.tensor([[True, True, True, False, False, False]])
    text = torch.tensor([[False, False, False, True, True, False]])
    # image: ceil(0.5*3)=2 of {0.9, 0.1, 0.5}; text: ceil(0.5*2)=1 of {0.3, 0.8}
    assert important_token_mask(scores, image, text, 0.5).tolist() == [[True, False, True, False, True, False]]
    # joint: ceil(0.5*5)=3 of all five
    assert important_token_mask(scores, image, text, 0.5, joint=True).tolist() == [
        [True, False, True, False, True, False]]
    assert important_token_mask(scores, image, text, 0.2, joint=True).tolist() == [
        [True, False, False, False, False, False]]
    # a row without members selects nothing; at least one member when there are any
    none = torch.zeros_like(image)
    assert not select_top(scores, none, 0.5).any()
    assert select_top(scores, image, 0.01).sum() == 1
    # a member without a score (NaN) goes last; a row with one member keeps it
    unscored = torch.tensor([[math.nan, 0.1, 0.5], [0.2, 0.7, 0.4]])
    members = torch.tensor([[True, True, True], [False, True, False]])
    assert select_top(unscored, members, 0.5).tolist() == [[False, True, True], [False, True, False]]


def llava_with_attentions():
    """A float64 tiny LLaVA, its batch masks and the reference forward pass with output_attentions."""
    model, inputs = tiny_float64("llava")
    adapter = get_adapter(model)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, use_cache=False)
    return model, adapter, batch_from_inputs(adapter, inputs), out


def test_probe_layer_subset_uses_only_those_layers():
    model, adapter, batch, out = llava_with_attentions()
    recorder = Recorder(adapter.num_layers, TokenImportance([1, 4], TOP_P))
    capture(model, adapter, [batch], recorder, attention_layers=[1, 4])
    expected = naive_tis([out.attentions[1], out.attentions[4]], batch.image, batch.text)
    members = batch.image | batch.text
    torch.testing.assert_close(recorder.last_scores[members].double(), expected[members], rtol=1e-6, atol=1e-9)


IMG, PAD = 99, 0


def hand_batch(rows, left=False):
    """A CalibrationBatch of token rows (IMG marks image placeholders), padded right or left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        attention[i, span] = 1
    valid = attention.bool()
    return CalibrationBatch({"input_ids": ids, "attention_mask": attention}, valid, (ids == IMG) & valid)


def test_template_length_is_the_shared_prefix_before_the_first_image():
    right = hand_batch([[1, 5, 6, IMG, IMG, 7, 8], [1, 5, 6, IMG, IMG, 9]])
    left = hand_batch([[1, 5, 6, IMG, IMG, 7], [1, 5, 6, IMG, IMG, 7, 8, 9]], left=True)
    # identical rows still stop before the first image token
    assert template_length([right, left]) == 3
    assert template_length([right, hand_batch([[1, 5, 4, IMG, IMG, 7]])]) == 2
    # text before the image: the question words differ, so they are not template
    assert template_length([hand_batch([[1, 5, 6, 11, 12, IMG], [1, 5, 6, 13, IMG]])]) == 3
    # one sample: nothing to compare, nothing skipped
    assert template_length([hand_batch([[1, 5, 6, IMG, 7]])]) == 0
    assert template_length([hand_batch([[IMG, 5], [IMG, 6]])]) == 0
    # one row's text before the image is a prefix of another's: the shorter one bounds the template
    assert template_length([hand_batch([[1, 5, 6, IMG, 7], [1, 5, IMG, 7]])]) == 2
    assert template_length([hand_batch([[1, 5, IMG, 7], [1, 5, 6, IMG, 7]])]) == 2
    mask = template_mask(left, 3)
    assert mask.tolist() == [[False, False, True, True, True, False, False, False],
                             [True, True, True, False, False, False, False, False]]


def test_skipped_template_tokens_are_neither_queries_nor_candidates():
    model, adapter, batch, out = llava_with_attentions()
    layers = list(range(adapter.num_layers))
    recorder = Recorder(adapter.num_layers, TokenImportance(layers, TOP_P, template=2))
    capture(model, adapter, [batch], recorder, attention_layers=layers)
    skipped = template_mask(batch, 2)
    assert (skipped & batch.text).sum() == 2 * batch.text.shape[0]  # the first two tokens are text
    text = batch.text & ~skipped
    expected = naive_tis(out.attentions, batch.image, text)  # the skipped tokens are no text queries either
    members = batch.image | text
    torch.testing.assert_close(recorder.last_scores[members].double(), expected[members], rtol=1e-6, atol=1e-9)
    assert torch.isnan(recorder.last_scores[skipped]).all()
    assert not (recorder.last_mask & skipped).any()
    assert torch.equal(recorder.last_mask, naive_top(expected, batch.image, TOP_P) | naive_top(expected, text, TOP_P))
    # without the skip, these leading tokens (attention sinks here too) are among the important ones
    plain = Recorder(adapter.num_layers, TokenImportance(layers, TOP_P))
    capture(model, adapter, [batch], plain, attention_layers=layers)
    assert (plain.last_mask & skipped).any()


def test_probe_layers_are_checked_against_the_model_at_both_ends():
    from shortlvlm.importance import resolve_probe_layers

    assert resolve_probe_layers([0, 5], 6) == [0, 5]  # the first and the last layer are layers
    assert resolve_probe_layers("all", 4, skip=[1]) == [0, 2, 3]
    for bad in ([6], [-1], []):
        with pytest.raises(ValueError, match=r"must be indices in 0\.\.5"):
            resolve_probe_layers(bad, 6)


def test_probe_layers_are_checked_only_where_tis_picks_the_tokens():
    """check_tis_layers refuses a probe layer the model lacks where TIS selects the tokens, and nowhere else:
    with every token used (tokens='all') the probe layers are never read, and a holder without TIS (SCP with
    its default tis=None, a scorer without the option) has nothing to check."""
    from shortlvlm.compensation import SCP
    from shortlvlm.importance import TIS, TokenImportanceError, check_tis_layers
    from shortlvlm.scoring import TISCosine, get_scorer

    with pytest.raises(TokenImportanceError, match=r"\[9\] must be indices in 0\.\.3: the model has 4 decoder"):
        check_tis_layers(4, TISCosine(tis=TIS(layers=(9,))))
    check_tis_layers(4, TISCosine(tis=TIS(layers=(9,), tokens="all")), SCP(), get_scorer("last"), None)
    check_tis_layers(12, TISCosine(tis=TIS(layers=(9,))))


def test_top_p_may_keep_every_token_but_not_none():
    assert TokenImportance([0], top_p=1.0).top_p == 1.0
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"tis_top_p must be in \(0, 1\]"):
            TokenImportance([0], top_p=bad)


@pytest.mark.parametrize("layers", ["all", (0,), (4, 8), [0, 3]])
def test_probe_layer_options_accept_all_or_non_negative_indices(layers):
    from shortlvlm.importance import TIS

    assert TIS(layers=layers).layers == (layers if layers == "all" else tuple(layers))


@pytest.mark.parametrize("layers", [(-1,), (0, -1), (True,), (), (1.0,), "some"])
def test_probe_layer_options_refuse_anything_else(layers):
    from shortlvlm.importance import TIS, TokenImportanceError

    with pytest.raises(TokenImportanceError, match=r"TIS\.layers \(--tis-layers\) must be 'all' or a list"):
        TIS(layers=layers)


def test_probe_layers_resolve_to_the_kept_ones_or_all_given():
    from shortlvlm.importance import resolve_probe_layers

    assert resolve_probe_layers("all", 5, skip=[1, 3]) == [0, 2, 4]
    assert resolve_probe_layers((4, 1, 2), 5, skip=[2]) == [1, 4]
    assert resolve_probe_layers((2,), 5, skip=[2]) == [2]  # every probe skipped: they are used anyway
    with pytest.raises(ValueError, match=r"\[5\] must be indices in 0\.\.4"):
        resolve_probe_layers((5,), 5)
    assert resolve_probe_layers((4,), 5) == [4]
