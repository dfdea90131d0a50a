"""drop_layers on every supported architecture, checked against the unpruned model with layers skipped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shortlvlm import drop_layers, get_adapter
from shortlvlm.errors import InvalidLayerSelectionError, UnsafeCutError, UnsupportedModelError
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model

# Outside Qwen3-VL's deepstack layers (0, 1); for Gemma 3 one full and one sliding layer.
REMOVE = [2, 4]


class SkipLayer(nn.Module):
    """Stands in for a removed layer in the reference model: passes the residual stream through."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def logits_with_layers_skipped(model, inputs, skipped):
    """Reference: the untouched model with the given layers bypassed (no cache involved)."""
    layers = get_adapter(model).layers
    originals = {i: layers[i] for i in skipped}
    for i in skipped:
        layers[i] = SkipLayer()
    try:
        with torch.no_grad():
            return model(**inputs, use_cache=False).logits
    finally:
        for i, layer in originals.items():
            layers[i] = layer


def greedy(model, inputs, use_cache):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=use_cache)


def test_pruned_model_equals_reference_with_layers_skipped(tiny):
    model, inputs = tiny
    expected = logits_with_layers_skipped(model, inputs, REMOVE)
    drop_layers(model, REMOVE)
    with torch.no_grad():
        actual = model(**inputs, use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_pruned_model_syncs_config_and_layer_indices(tiny):
    model, _ = tiny
    adapter = get_adapter(model)
    before = {f: list(getattr(adapter.config.get_text_config(), f)) for f in
              adapter.per_layer_fields(adapter.config.get_text_config())}
    drop_layers(model, REMOVE)
    kept = [0, 1, 3, 5]
    assert adapter.num_layers == 4
    for config in adapter.text_configs():
        assert config.num_hidden_layers == 4
        for field_name, values in before.items():
            assert list(getattr(config, field_name)) == [values[i] for i in kept]
    for position, layer in enumerate(adapter.layers):
        indices = {m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)}
        assert indices == {position}


def test_cached_and_uncached_generation_agree_after_pruning(tiny):
    model, inputs = tiny
    drop_layers(model, REMOVE)
    assert torch.equal(greedy(model, inputs, True), greedy(model, inputs, False))


def test_gemma3_sliding_pattern_follows_the_kept_layers():
    model = tiny_model("gemma3", 6)
    inputs = tiny_inputs(model.config)
    text = model.config.text_config
    assert text.layer_types == ["sliding_attention", "sliding_attention", "full_attention"] * 2
    assert text.sliding_window < inputs["input_ids"].shape[1]  # so the pattern changes the output
    drop_layers(model, [2, 4])  # one full, one sliding
    assert text.layer_types == ["sliding_attention"] * 3 + ["full_attention"]
    with torch.no_grad():
        synced = model(**inputs, use_cache=False).logits
        # Negative control: the stale list (what forgetting the sync would leave) changes the output.
        text.layer_types = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
        stale = model(**inputs, use_cache=False).logits
    assert (synced - stale).abs().max() > 1e-3


def test_qwen2_max_window_layers_counts_kept_prefix():
    model = tiny_model("qwen2_vl", 6)
    text = model.config.text_config
    text.max_window_layers = 3
    drop_layers(model, [1, 4])
    assert text.max_window_layers == 2  # layers 0 and 2 of the first three are kept


def test_qwen3_vl_refuses_to_remove_deepstack_layers():
    model = tiny_model("qwen3_vl", 6)
    with pytest.raises(UnsafeCutError, match="deepstack"):
        drop_layers(model, [1, 3])
    assert len(get_adapter(model).layers) == 6  # untouched


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([6], "out of range"),
        ([-1], "out of range"),
        ([2, 2], "more than once"),
        (list(range(6)), "all 6"),
        ([], "no layers"),
        (["2"], "not an integer"),
    ],
)
def test_bad_selections_are_refused_and_leave_the_model_untouched(indices, message):
    model = tiny_model("llava", 6)
    with pytest.raises(InvalidLayerSelectionError, match=message):
        drop_layers(model, indices)
    assert model.config.text_config.num_hidden_layers == 6
    assert len(get_adapter(model).layers) == 6


def test_inconsistent_config_is_refused():
    model = tiny_model("llava", 6)
    model.config.text_config.num_hidden_layers = 5
    with pytest.raises(UnsupportedModelError, match="num_hidden_layers=5"):
        drop_layers(model, [1])
