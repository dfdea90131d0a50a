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
def test_bypassed_layers_are_not_computed_and_give_the_dropped_models_logits(model_type):
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


def test_a_layer_whose_output_carries_more_is_computed_with_its_hidden_states_replaced():
    layer = TupleLayer("tensor")
    adapter = SimpleNamespace(layers=nn.ModuleList([layer]))
    hidden = torch.randn(2, 3, 4)
    with bypass_layers(adapter, [0]):
        for call in (1, 2):
            out, extra = layer(hidden)
            assert out is hidden and layer.calls == call
            assert extra == layer.linear(hidden).sum()  # the real tail, not a stale one


def test_a_tuple_with_only_none_after_the_hidden_states_is_faked():
    layer = TupleLayer("none")
    adapter = SimpleNamespace(layers=nn.ModuleList([layer]))
    hidden = torch.randn(2, 3, 4)
    with bypass_layers(adapter, [0]):
        assert layer(hidden)[0] is hidden and layer.calls == 1
        out = layer(hidden)
        assert out[0] is hidden and out[1:] == (None,) and layer.calls == 1


def test_an_instance_forward_wrapper_is_restored():
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


def test_output_forms_are_learned_per_adapter_and_kept_for_its_lifetime():
    """What one model's adapter learned is neither global nor lost between contexts on the same adapter."""
    layer, other = TupleLayer("none"), TupleLayer("none")
    adapter = SimpleNamespace(layers=nn.ModuleList([layer]), output_forms={})
    hidden = torch.randn(2, 3, 4)
    with bypass_layers(adapter, [0]):
        layer(hidden)
    assert layer.calls == 1 and list(adapter.output_forms.values()) == [2]  # (hidden, None): length 2
    with bypass_layers(adapter, [0]):
        layer(hidden)
    assert layer.calls == 1  # the same adapter remembers: nothing computed in the second context
    fresh = SimpleNamespace(layers=nn.ModuleList([other]), output_forms={})
    with bypass_layers(fresh, [0]):
        other(hidden)
    assert other.calls == 1 and fresh.output_forms == adapter.output_forms  # learned again, not inherited
    assert not hasattr(hooks, "_OUTPUT_FORMS")


def test_a_real_adapter_carries_its_own_store():
    first, second = get_adapter(tiny_model("llava", 2)), get_adapter(tiny_model("llava", 2))
    assert first.output_forms == {} and first.output_forms is not second.output_forms
