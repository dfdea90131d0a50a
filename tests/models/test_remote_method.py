"""Short-LVLM on the remote-code layouts (Qwen-VL-Chat, mPLUG-Owl2), against references built without the adapter.

As on the transformers architectures (tests/test_importance.py, tests/test_surgery.py): streaming TIS
equals the naive float64 TIS from full attention maps, the streamed cosine equals the one from stored
hidden states, a pruned model equals the unpruned one with the layers skipped, and a pruned, SCP-edited
model saves and reloads with trust_remote_code. The image positions of the references come from the
model itself (where the image changes the stream entering layer 0; the modality_indicators mPLUG-Owl2's
layers receive), never from the adapter, so a wrong image-position hook fails these tests.
"""

from __future__ import annotations

import json

import pytest
import torch

from shortlvlm import SCP, Calibration, TISCosine, drop_layers, get_adapter, prune, save, verify
from shortlvlm.capture import batch_from_inputs, capture
from shortlvlm.data.calibration import CalibrationSample
from shortlvlm.data.calibration_set import CalibrationSet
from shortlvlm.importance import TokenImportance

from ..test_importance import TOP_P, Recorder, naive_tis, naive_top
from .remote_mimics import (
    MplugOwl2Config,
    MPLUGOwl2LlamaForCausalLM,
    QWenConfig,
    QWenLMHeadModel,
    mplug_owl2_inputs,
    qwen_vl_chat_inputs,
)

MIMICS = {
    "qwen-vl-chat": (QWenLMHeadModel, QWenConfig, qwen_vl_chat_inputs),
    "mplug-owl2": (MPLUGOwl2LlamaForCausalLM, MplugOwl2Config, mplug_owl2_inputs),
}


def make(name, dtype=torch.float64, batch_size=2, seed=0):
    cls, config_cls, make_inputs = MIMICS[name]
    torch.manual_seed(0)
    model = cls(config_cls()).eval().to(dtype)
    inputs = make_inputs(model.config, batch_size=batch_size, seed=seed)
    return model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def layer0_input(model, inputs):
    """(hidden states entering decoder layer 0, that layer's keyword arguments)."""
    seen = {}

    def grab(module, args, kwargs):
        seen["h"], seen["kwargs"] = (args[0] if args else kwargs["hidden_states"]).clone(), kwargs

    handle = get_adapter(model).layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen["h"], seen["kwargs"]


def reference_image_positions(name, model, inputs):
    """[B, T'] image positions as the model shows them, independent of the adapter."""
    hidden, kwargs = layer0_input(model, inputs)
    if name == "mplug-owl2":
        return kwargs["modality_indicators"] == 1
    other, _ = layer0_input(model, dict(inputs, images=inputs["images"] + 1.0))
    return (hidden - other).abs().amax(-1) > 0


@pytest.fixture(params=list(MIMICS))
def mimic(request):
    return request.param


@pytest.fixture
def streamed_vs_naive(mimic):
    model, inputs = make(mimic)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, inputs)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    layers = list(range(adapter.num_layers))
    recorder = Recorder(adapter.num_layers, TokenImportance(layers, TOP_P))
    capture(model, adapter, [batch], recorder, attention_layers=layers)
    return model, adapter, inputs, out, recorder


def test_streaming_tis_equals_naive_from_full_attention_maps(mimic, streamed_vs_naive):
    model, adapter, inputs, out, recorder = streamed_vs_naive
    assert len(out.attentions) == adapter.num_layers
    image = reference_image_positions(mimic, model, inputs)
    text = ~image  # no padding, no special ids in these batches
    assert image.sum(1).tolist() == [16, 16] if mimic == "qwen-vl-chat" else [8, 8]
    expected = naive_tis(out.attentions, image, text)
    assert recorder.last_scores.shape == expected.shape
    torch.testing.assert_close(recorder.last_scores.double(), expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(recorder.last_mask, naive_top(expected, image, TOP_P) | naive_top(expected, text, TOP_P))


def test_streaming_cosine_equals_stored_hidden_states(streamed_vs_naive):
    _, adapter, _, out, recorder = streamed_vs_naive
    states = out.hidden_states  # the last entry is after the final norm: the last layer is left out
    for layer in range(adapter.num_layers - 1):
        expected = torch.nn.functional.cosine_similarity(states[layer], states[layer + 1], dim=-1)
        torch.testing.assert_close(recorder.last_cos[layer], expected, rtol=1e-10, atol=1e-12)
    mask = recorder.last_mask
    for layer in range(adapter.num_layers):
        per_sample = [recorder.last_cos[layer][b][mask[b]].mean() for b in range(mask.shape[0])]
        assert recorder.similarity("important")[layer] == pytest.approx(float(sum(per_sample) / len(per_sample)),
                                                                         rel=1e-12)


def test_layer_by_layer_pass_gives_the_same_statistics(mimic):
    model, inputs = make(mimic)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, inputs)
    layers = list(range(adapter.num_layers))
    results = []
    for layerwise in (False, True):
        recorder = Recorder(adapter.num_layers, TokenImportance(layers, TOP_P))
        capture(model, adapter, [batch], recorder, attention_layers=layers, layerwise=layerwise)
        results.append((recorder.last_scores, recorder.similarity("important")))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0, equal_nan=True)
    assert results[0][1] == results[1][1]


class SkipLayer(torch.nn.Module):
    """A removed layer in the reference: passes the stream through, in the tuple these layers return."""

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)


def test_pruned_model_equals_the_unpruned_one_with_layers_skipped(mimic):
    model, inputs = make(mimic, torch.float32)
    layers = get_adapter(model).layers
    originals = {i: layers[i] for i in (1, 4)}
    for i in originals:
        layers[i] = SkipLayer()
    with torch.no_grad():
        expected = model(**inputs).logits
    for i, layer in originals.items():
        layers[i] = layer
    drop_layers(model, [1, 4])
    with torch.no_grad():
        actual = model(**inputs).logits
    assert model.config.num_hidden_layers == 4
    torch.testing.assert_close(actual, expected)


def calibration_of(model, name, batches=3):
    """A CalibrationSet whose batches are encoded already (the mimics ship no processor)."""
    adapter = get_adapter(model)
    encoded = [batch_from_inputs(adapter, make(name, torch.float32, seed=seed)[1]) for seed in range(batches)]
    samples = tuple(CalibrationSample(id=f"s{i}", prompt="q", answer="a") for i in range(batches))
    return CalibrationSet(Calibration(), samples, tuple(encoded))


def test_prune_with_scp_saves_and_reloads_with_remote_code(mimic, tmp_path):
    model, inputs = make(mimic, torch.float32)
    cls = type(model)
    cls.config_class.register_for_auto_class()
    cls.register_for_auto_class("AutoModelForCausalLM")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, plan = prune(model, None, 0.3, scorer=TISCosine(), calibration=calibration_of(model, mimic),
                        compensation=SCP(rank=4))
    assert len(plan.removed_layers) == 2 and plan.compensation == "scp"
    writer = get_adapter(model).spec.residual_writers[-1]
    edited = [e["edited_layer"] for e in plan.params["compensation_report"] if e["edited_layer"] is not None]
    assert edited, plan.params["compensation_report"]
    kept = [i for i in range(6) if i not in plan.removed_layers]
    for layer in edited:
        now = get_adapter(model).residual_writers(kept.index(layer))[writer].weight
        assert not torch.equal(now, before[f"{get_adapter(model).layers_path}.{layer}.{writer}.weight"])
    out = save(model, None, plan, tmp_path / "pruned")
    assert "auto_map" in json.loads((out / "config.json").read_text())
    assert (out / "remote_mimics.py").is_file()  # the modeling code travels with the checkpoint
    report = verify(model, out, inputs, trust_remote_code=True)
    assert report.num_layers == 4 and report.max_abs_logit_diff <= report.tolerance


def test_answer_loss_reads_the_expanded_sequence_of_mplug_owl2():
    from shortlvlm.scoring.loss import batch_answer_nll

    model, inputs = make("mplug-owl2", torch.float32)
    batch = batch_from_inputs(get_adapter(model), inputs)
    batch.answer = torch.zeros_like(batch.valid)
    batch.answer[:, 7:] = True  # input tokens 7..9 sit at layer positions 14..16 (8 image tokens for 1)
    nll, count = batch_answer_nll(model, batch)
    with torch.no_grad():
        logits = model(**inputs).logits
    # tokens 7..9 of each row, predicted by the logits of layer positions 13..15
    expected = -torch.log_softmax(logits[:, 13:16], -1).gather(-1, inputs["input_ids"][:, 7:10, None]).sum()
    assert count == 6
    torch.testing.assert_close(nll, expected)
