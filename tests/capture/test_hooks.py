"""`bypass_layers`: a bypassed decoder layer passes its input through without being computed."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from shortlvlm import drop_layers, get_adapter
from shortlvlm.capture import bypass_layers, hooks
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model


def computations(adapter) -> list[int]:
    """Counters of real computations per layer (its first submodule runs only when the layer does)."""
    counts = [0] * adapter.num_layers
    for index, layer in enumerate(adapter.layers):
        first = next(module for module in layer.children() if any(True for _ in module.parameters()))
        first.register_forward_pre_hook(lambda module, args, index=index: counts.__setitem__(index, counts[index] + 1))
    return counts


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3", "idefics3"])
def test_bypassed_layers_are_not_computed_and_give_the_dropped_models_logits(model_type, monkeypatch):
    monkeypatch.setattr(hooks, "_OUTPUT_FORMS", {})
    torch.manual_seed(0)
    model = tiny_model(model_type, 6).eval()
    reference = copy.deepcopy(model)
    drop_layers(reference, [1, 3])
    inputs = tiny_inputs(model.config)
    adapter = get_adapter(model)
    counts = computations(adapter)
    with torch.no_grad():
        expected = reference(**inputs, use_cache=False).logits
        with bypass_layers(adapter, [1, 3]):
            first = model(**inputs, use_cache=False).logits
            assert counts == [1, 1, 1, 0, 1, 1]  # layer 1 taught the class's output form; layer 3 skipped
            second = model(**inputs, use_cache=False).logits
            assert counts == [2, 1, 2, 0, 2, 2]  # nothing bypassed is computed once the form is known
        torch.testing.assert_close(first, expected)
        torch.testing.assert_close(second, expected)
        model(**inputs, use_cache=False)
    assert counts == [3, 2, 3, 1, 3, 3]  # restored: every layer computes again


class TupleLayer(nn.Module):
    """Returns (hidden, extra): `extra` is something a pass-through cannot fake."""

    def __init__(self, tail):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.tail = tail
        self.calls = 0

    def forward(self, hidden_states):
        self.calls += 1
        out = self.linear(hidden_states)
        return (out, out.sum()) if self.tail == "tensor" else (out, None)


def test_a_layer_whose_output_carries_more_is_computed_with_its_hidden_states_replaced(monkeypatch):
    monkeypatch.setattr(hooks, "_OUTPUT_FORMS", {})
    layer = TupleLayer("tensor")
    adapter = SimpleNamespace(layers=nn.ModuleList([layer]))
    hidden = torch.randn(2, 3, 4)
    with bypass_layers(adapter, [0]):
        for call in (1, 2):
            out, extra = layer(hidden)
            assert out is hidden and layer.calls == call
            assert extra == layer.linear(hidden).sum()  # the real tail, not a stale one


def test_a_tuple_with_only_none_after_the_hidden_states_is_faked(monkeypatch):
    monkeypatch.setattr(hooks, "_OUTPUT_FORMS", {})
    layer = TupleLayer("none")
    adapter = SimpleNamespace(layers=nn.ModuleList([layer]))
    hidden = torch.randn(2, 3, 4)
    with bypass_layers(adapter, [0]):
        assert layer(hidden)[0] is hidden and layer.calls == 1
        out = layer(hidden)
        assert out[0] is hidden and out[1:] == (None,) and layer.calls == 1


def test_an_instance_forward_wrapper_is_restored(monkeypatch):
    # accelerate's offload hooks replace the instance's forward; bypassing must put theirs back.
    layer = TupleLayer("none")
    wrapper = layer.forward
    layer.forward = lambda *args, **kwargs: wrapper(*args, **kwargs)
    installed = layer.forward
    with bypass_layers(SimpleNamespace(layers=nn.ModuleList([layer])), [0]):
        assert layer.forward is not installed
    assert layer.forward is installed
    plain = TupleLayer("none")
    with bypass_layers(SimpleNamespace(layers=nn.ModuleList([plain])), [0]):
        pass
    assert "forward" not in plain.__dict__
