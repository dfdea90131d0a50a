"""benchmarks/loss_scoring_cost.py: the layer counter counts real computations, not bypassed layers."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from loss_scoring_cost import count_layer_runs

from shortlvlm import get_adapter
from shortlvlm.capture import bypass_layers
from shortlvlm.models.tiny import tiny_inputs, tiny_model


def test_bypassed_layers_are_not_counted_and_hooks_come_off():
    torch.manual_seed(0)
    model = tiny_model("llava", 5).eval()
    adapter = get_adapter(model)
    inputs = tiny_inputs(model.config)
    with torch.no_grad(), bypass_layers(adapter, [1, 3]):
        model(**inputs, use_cache=False)  # a first bypassed call computes once, to learn the output form
    counts, handles = count_layer_runs(adapter)
    with torch.no_grad():
        model(**inputs, use_cache=False)
        with bypass_layers(adapter, [1, 3]):
            model(**inputs, use_cache=False)
        assert counts == [2, 1, 2, 1, 2]
        for handle in handles:
            handle.remove()
        model(**inputs, use_cache=False)
    assert counts == [2, 1, 2, 1, 2]


def test_pass_anatomy_splits_one_pass_into_parts_that_add_up():
    from loss_scoring_cost import pass_anatomy

    from shortlvlm.capture import batch_from_inputs

    torch.manual_seed(0)
    model = tiny_model("llava", 4).eval()
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    batch.answer = torch.zeros_like(batch.valid)
    batch.answer[:, -3:] = True
    anatomy = pass_anatomy(model, adapter, [batch], repeats=1)
    seconds = anatomy["seconds"]
    parts = ("decoder layers", "image encoder", "lm head", "rest")
    assert sum(seconds[p] for p in parts) == pytest.approx(seconds["total"], abs=5e-4)
    assert all(seconds[p] > 0 for p in ("decoder layers", "image encoder", "lm head"))
    assert anatomy["in_decoder_layers"]["decoder layers"] == 4.0  # the unit: one decoder layer's average
    assert not model.model.vision_tower._forward_hooks and not adapter.layers[0]._forward_pre_hooks
