"""Remote-code layouts (Qwen-VL-Chat, mPLUG-Owl2): registry by class name, structural detection, overrides."""

from __future__ import annotations

import pytest
import torch

from shortlvlm import Plan, drop_layers, get_adapter, save, verify
from shortlvlm.errors import UnsupportedModelError
from shortlvlm.models.generic import find_decoder_layers

from .remote_mimics import (
    MplugOwl2Config,
    MPLUGOwl2LlamaForCausalLM,
    QWenConfig,
    QWenLMHeadModel,
    mplug_owl2_inputs,
    qwen_vl_chat_inputs,
)

MIMICS = {
    "qwen-vl-chat": (QWenLMHeadModel, QWenConfig, qwen_vl_chat_inputs, "transformer.h",
                     ("attn.c_proj", "mlp.c_proj")),
    "mplug-owl2": (MPLUGOwl2LlamaForCausalLM, MplugOwl2Config, mplug_owl2_inputs, "model.layers",
                   ("self_attn.o_proj", "mlp.down_proj")),
}


@pytest.fixture(params=list(MIMICS))
def mimic(request):
    cls, config_cls, make_inputs, layers_path, writers = MIMICS[request.param]
    torch.manual_seed(0)
    model = cls(config_cls()).eval()
    return model, make_inputs(model.config), layers_path, writers


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_registered_by_class_name(mimic):
    model, _, layers_path, writers = mimic
    adapter = get_adapter(model)
    assert adapter.spec.remote_code
    assert adapter.layers_path == layers_path
    assert tuple(adapter.residual_writers(0)) == writers


def test_structure_detection_finds_the_language_model_and_its_writers(mimic):
    model, _, layers_path, writers = mimic
    adapter = get_adapter(model, generic=True)
    assert adapter.spec.name.startswith("generic")
    assert adapter.layers_path == layers_path  # not the (longer) vision block list
    assert tuple(adapter.residual_writers(0)) == writers  # Qwen's mlp.w2 is not a writer


def test_generic_prune_matches_skipping_the_layers(mimic):
    model, inputs, _, _ = mimic
    adapter = get_adapter(model, generic=True)
    before = run(model, inputs)
    layers = adapter.layers
    originals = [layers[1], layers[4]]
    layers[1] = layers[4] = _Skip()
    expected = run(model, inputs)
    layers[1], layers[4] = originals
    drop_layers(model, [1, 4], adapter)
    assert model.config.num_hidden_layers == 4 and adapter.num_layers == 4
    actual = run(model, inputs)
    torch.testing.assert_close(actual, expected)
    assert (actual - before).abs().max() > 1e-4  # the layers really mattered


class _Skip(torch.nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)  # both layouts' layers return tuples whose first entry the caller reads


def test_pruned_mimic_saves_and_reloads(mimic, tmp_path):
    model, inputs, _, _ = mimic
    adapter = get_adapter(model)
    plan = Plan(method="manual", num_layers_before=6, removed_layers=[2, 3])
    drop_layers(model, [2, 3], adapter)
    out = save(model, None, plan, tmp_path / "out")
    report = verify(model, out, inputs)
    assert report.num_layers == 4 and report.max_abs_logit_diff == 0.0


def test_qwen_vl_chat_image_mask_is_the_span_between_img_tags():
    model = QWenLMHeadModel(QWenConfig())
    inputs = qwen_vl_chat_inputs(model.config)
    mask = get_adapter(model).image_token_mask(inputs["input_ids"])
    assert mask.sum(dim=1).tolist() == [16, 16]
    assert mask[:, 4:20].all()  # 3 text tokens, <img>, then the 16 image positions


def test_overrides_handle_an_unregistered_class():
    class RenamedQwen(QWenLMHeadModel):
        pass

    model = RenamedQwen(QWenConfig())
    with pytest.raises(UnsupportedModelError, match="no adapter for RenamedQwen"):
        get_adapter(model)
    adapter = get_adapter(model, layers_path="transformer.h", writers=("attn.c_proj", "mlp.c_proj"))
    assert adapter.num_layers == 6
    drop_layers(model, [0], adapter)
    assert adapter.num_layers == 5


def test_detection_without_a_block_list_names_the_override():
    with pytest.raises(UnsupportedModelError, match="--layers-path"):
        find_decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
