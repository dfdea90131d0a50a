"""Built-in adapters: every supported architecture resolves, and its answers match the real model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shortlvlm.errors import UnsupportedModelError
from shortlvlm.models import REGISTRY, SPECS, get_adapter
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_model


def test_every_tiny_architecture_has_a_registered_adapter():
    for model_type in TINY_MODEL_TYPES:
        model = tiny_model(model_type, 2)
        assert type(model).__name__ in REGISTRY, model_type
    assert len({spec.name for spec in SPECS}) == len(SPECS)


def test_adapter_finds_layers_and_residual_writers(tiny):
    model, _ = tiny
    adapter = get_adapter(model)
    hidden = model.config.get_text_config().hidden_size
    assert adapter.num_layers == 6
    assert adapter.layers is model.get_submodule(adapter.spec.layers_path)
    for index in range(adapter.num_layers):
        writers = adapter.residual_writers(index)
        assert set(writers) == {"self_attn.o_proj", "mlp.down_proj"}
        assert all(isinstance(w, nn.Linear) and w.out_features == hidden for w in writers.values())
    for norm in adapter.spec.writer_post_norms.values():
        assert isinstance(adapter.layers[0].get_submodule(norm), nn.Module)


def _layer0_input(model, inputs):
    captured = {}

    def grab(module, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"]).clone()

    handle = get_adapter(model).layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        handle.remove()
    return captured["h"]


def test_image_token_mask_marks_exactly_where_image_features_enter(tiny):
    model, inputs = tiny
    mask = get_adapter(model).image_token_mask(inputs["input_ids"])
    other = dict(inputs, pixel_values=inputs["pixel_values"] + 1.0)
    hidden = _layer0_input(model, inputs)
    changed = (hidden - _layer0_input(model, other)).abs().amax(-1) > 0
    assert mask.any()
    assert not (changed & ~mask).any(), "positions fed by the image are not marked"
    constant = mask & ~changed
    if constant.any():  # LLaVA-NeXT: image slots that hold the learned row separator
        newline = model.model.image_newline
        assert torch.allclose(hidden[constant], newline.expand(int(constant.sum()), -1))


def test_modality_inputs_are_ones_the_model_accepts(tiny):
    model, inputs = tiny
    for name in get_adapter(model).spec.modality_inputs:
        assert name in inputs, f"the tiny batch for {type(model).__name__} lacks {name}"


def test_qwen3_vl_protects_exactly_its_deepstack_layers():
    model = tiny_model("qwen3_vl", 6)
    depth = len(model.config.vision_config.deepstack_visual_indexes)
    assert set(get_adapter(model).protected_layers()) == set(range(depth))


def test_unknown_architecture_without_overrides_is_refused():
    class MysteryVLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4)) for _ in range(3))

    with pytest.raises(UnsupportedModelError, match="--generic"):
        get_adapter(MysteryVLM())


def test_override_pointing_at_a_missing_path_is_refused():
    model = tiny_model("llava", 2)
    with pytest.raises(UnsupportedModelError, match=r"no submodule 'model\.layers'"):
        get_adapter(model, layers_path="model.layers")


def test_image_token_id_override(tiny):
    model, inputs = tiny
    ids = inputs["input_ids"]
    adapter = get_adapter(model, image_token_id=int(ids[0, -1]))
    assert torch.equal(adapter.image_token_mask(ids), ids == ids[0, -1])
