"""benchmarks/loss_scoring_cost.py: the layer counter counts real computations, not bypassed layers."""

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from loss_scoring_cost import count_layer_runs

from shortlvlm import get_adapter
from shortlvlm.capture import bypass_layers
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model


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


def test_pass_anatomy_times_each_part_by_a_hand_count(monkeypatch):
    """On a clock that moves only when a module runs (1 s in each decoder layer, 10 s in each image-encoder
    module, 100 s in the LM head, 1000 s in the embeddings, which belong to no part), each part's seconds
    and the total are known by hand: two batches of four layers, one encoder run and one LM head per batch."""
    import loss_scoring_cost
    from loss_scoring_cost import pass_anatomy

    from shortlvlm.capture import batch_from_inputs

    torch.manual_seed(0)
    model = tiny_model("llava", 4).eval()
    adapter = get_adapter(model)
    batches = [batch_from_inputs(adapter, tiny_inputs(model.config, seed=seed)) for seed in (0, 1)]
    for batch in batches:
        batch.answer = torch.zeros_like(batch.valid)
        batch.answer[:, -3:] = True
    clock = [0.0]
    monkeypatch.setattr(loss_scoring_cost, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def tick(seconds):
        return lambda module, args, output: clock.__setitem__(0, clock[0] + seconds)

    # forward hooks registered before pass_anatomy's run first, inside the interval it measures
    ticking = [(layer.self_attn, 1.0) for layer in adapter.layers] + [
        (model.model.vision_tower.embeddings, 10.0), (model.model.multi_modal_projector, 10.0),
        (model.lm_head, 100.0), (model.get_input_embeddings(), 1000.0)]
    handles = [module.register_forward_hook(tick(seconds)) for module, seconds in ticking]
    anatomy = pass_anatomy(model, adapter, batches, repeats=1)
    for handle in handles:
        handle.remove()
    assert anatomy["seconds"] == {"decoder layers": 2 * 4 * 1.0, "image encoder": 2 * 20.0, "lm head": 2 * 100.0,
                                  "rest": 2 * 1000.0, "total": 2 * 1124.0}
    assert anatomy["in_decoder_layers"]["lm head"] == 100.0  # in units of one decoder layer's 1 s
    assert not model.model.vision_tower._forward_hooks and not adapter.layers[0]._forward_pre_hooks
