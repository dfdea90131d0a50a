"""LaCo's layer merge: the merged parameters and the pruned model against a hand computation, no calibration."""

from __future__ import annotations

import copy

import pytest
import torch

from shortlvlm import LaCo, LastLayers, drop_layers, get_adapter, prune
from shortlvlm.compensation import CompensationError, compensate
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model


def float64_model(model_type="llava", num_layers=8, seed=0):
    """A tiny float64 model whose decoder parameters all differ between layers (norms included)."""
    model = tiny_model(model_type, num_layers).double()
    adapter = get_adapter(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.layers.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    inputs = tiny_inputs(model.config, batch_size=2, seed=seed)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])  # as test_lstsq.py: no all-masked rows
    return model, adapter, inputs


def layer_state(adapter, index: int) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in adapter.layers[index].named_parameters()}


def hand_merge(adapter, below: int, run: list[int], scale: float = 1.0) -> dict[str, torch.Tensor]:
    """θ_r + scale Σ_k (θ_pk - θ_r), written out parameter by parameter."""
    kept = layer_state(adapter, below)
    removed = [layer_state(adapter, index) for index in run]
    return {name: value + scale * sum(state[name] - value for state in removed) for name, value in kept.items()}


@pytest.mark.parametrize("scale", [1.0, 0.5, -0.25])
def test_merged_parameters_equal_the_hand_computation(scale):
    model, adapter, _ = float64_model()
    reference = copy.deepcopy(adapter)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = compensate(model, adapter, [], [0, 2, 3, 6], LaCo(scale=scale))
    expected = {1: hand_merge(reference, 1, [2, 3], scale), 5: hand_merge(reference, 5, [6], scale)}
    for below, merged in expected.items():
        actual = layer_state(adapter, below)
        assert actual.keys() == merged.keys() and len(actual) == 9
        for name, value in merged.items():
            torch.testing.assert_close(actual[name], value, rtol=1e-13, atol=1e-15, msg=name)
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    prefix = "model.language_model.layers"
    assert changed == sorted(f"{prefix}.{i}.{n}" for i in (1, 5) for n in expected[i])  # every one of r's, no other
    assert [(e["removed"], e["edited_layer"]) for e in report] == [([0], None), ([2, 3], 1), ([6], 5)]
    for entry, below in zip(report[1:], (1, 5), strict=True):
        old = torch.cat([v.reshape(-1) for v in layer_state(reference, below).values()])
        new = torch.cat([v.reshape(-1) for v in expected[below].values()])
        assert entry["scale"] == scale and entry["parameters"] == 9 and entry["elements"] == old.numel()
        assert entry["relative_change"] == pytest.approx(float((new - old).norm() / old.norm()), abs=1e-6)
        assert "layer_types_differ" not in entry


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3"])
def test_pruned_model_equals_a_copy_merged_by_hand_and_cut(model_type):
    model, adapter, inputs = float64_model(model_type)
    reference = copy.deepcopy(model)
    reference_adapter = get_adapter(reference)
    merged = {1: hand_merge(reference_adapter, 1, [2, 3]), 5: hand_merge(reference_adapter, 5, [6])}
    with torch.no_grad():
        for below, values in merged.items():
            for name, parameter in reference_adapter.layers[below].named_parameters():
                parameter.copy_(values[name])
    drop_layers(reference, [2, 3, 6], reference_adapter)
    compensate(model, adapter, [], [2, 3, 6], LaCo())
    drop_layers(model, [2, 3, 6], adapter)
    with torch.no_grad():
        expected = reference(**inputs, use_cache=False).logits
        actual = model(**inputs, use_cache=False).logits
        unmerged = copy.deepcopy(float64_model(model_type)[0])
        drop_layers(unmerged, [2, 3, 6])
        plain = unmerged(**inputs, use_cache=False).logits
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(actual, plain)  # the merge changed what the cut model computes


def forbid_calibration(monkeypatch):
    """Make every capture pass, calibration read and encoding fail."""
    import shortlvlm.capture.dispatch as dispatch
    import shortlvlm.jobs.prune as prune_job
    import shortlvlm.pruning as pruning

    def refuse(*args, **kwargs):
        raise AssertionError("LaCo must not read or run calibration data")

    for module, name in [(dispatch, "run_whole_model"), (dispatch, "run_layerwise"), (pruning, "calibration_set"),
                         (pruning, "encode_calibration"), (prune_job, "read_calibration")]:
        monkeypatch.setattr(module, name, refuse)


def test_no_calibration_pass_runs_and_no_data_is_read(monkeypatch):
    model, adapter, _ = float64_model()
    expected = hand_merge(copy.deepcopy(adapter), 3, [4, 5, 6])
    forbid_calibration(monkeypatch)
    model, plan = prune(model, None, 0.375, scorer=LastLayers(), compensation=LaCo(), adapter=adapter,
                        calibration=Calibration(source="/nonexistent/calib.jsonl"))
    assert plan.removed_layers == [4, 5, 6] and plan.compensation == "laco" and plan.calibration == {}
    assert plan.compensation_options == {"scale": 1.0}
    (entry,) = plan.params["compensation_report"]
    assert entry["edited_layer"] == 3 and entry["removed"] == [4, 5, 6]
    for name, value in layer_state(adapter, 3).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-13, atol=1e-15)


def test_cli_prunes_listed_layers_with_laco_without_calibration(tmp_path, capsys, monkeypatch):
    from shortlvlm.cli import main

    forbid_calibration(monkeypatch)
    out = tmp_path / "merged"
    assert main(["prune", "toy", "--layers", "5,6", "--compensation", "laco", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "compensation laco" in stdout and "run [5, 6]: merged into layer 4 (LaCo, scale 1" in stdout
    assert "verified" in stdout


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_every_architecture_is_merged_and_differing_layer_types_are_reported(model_type):
    model = tiny_model(model_type, 5)
    adapter = get_adapter(model)
    expected = hand_merge(copy.deepcopy(adapter), 1, [2])
    types = getattr(model.config.get_text_config(), "layer_types", None)
    (entry,) = compensate(model, adapter, [], [2], LaCo())
    assert entry["edited_layer"] == 1 and entry["parameters"] == len(expected)
    for name, value in layer_state(adapter, 1).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)
    if model_type == "gemma3":  # sliding-window layer 1, global layer 2
        assert types[1:3] == ["sliding_attention", "full_attention"]
        assert entry["layer_types_differ"] == {"layer_types": ["sliding_attention", "full_attention"]}
    else:
        assert "layer_types_differ" not in entry
    drop_layers(model, [2], adapter)
    with torch.no_grad():
        logits = model(**tiny_inputs(model.config), use_cache=False).logits
    assert torch.isfinite(logits).all()


def test_a_run_at_layer_zero_is_reported_and_left_alone():
    model, adapter, _ = float64_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = compensate(model, adapter, [], [0, 1], LaCo())
    assert report == [{"removed": [0, 1], "edited_layer": None, "reason": "run starts at layer 0: nothing below"}]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_scale_zero_leaves_every_weight_as_it_was():
    model, adapter, _ = float64_model()
    model = model.to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    (entry,) = compensate(model, adapter, [], [3, 4], LaCo(scale=0.0))
    assert entry["relative_change"] == 0.0 and entry["edited_layer"] == 2
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "1", True, None])
def test_bad_scales_are_refused(scale):
    with pytest.raises(CompensationError, match=r"LaCo\.scale \(--laco-scale\) must be a finite number"):
        LaCo(scale=scale)


def test_a_non_finite_merge_is_refused_and_nothing_is_edited():
    model, adapter, _ = float64_model()
    with torch.no_grad():
        adapter.layers[6].mlp.up_proj.weight[0, 0] = float("inf")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(CompensationError, match=r"merge of layers \[6\] into layer 5 gives NaN/Inf in 'mlp\.up_proj"
                                                r"\.weight'.*--dtype"):
        compensate(model, adapter, [], [2, 3, 6], LaCo())  # run [2, 3] merges first: it must not be written
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_merge_that_overflows_the_parameter_dtype_is_refused():
    model = tiny_model("llava", 4).half()
    adapter = get_adapter(model)
    with torch.no_grad():
        for index in (2, 3):
            adapter.layers[index].self_attn.q_proj.weight[0, 0] = 60000.0  # finite in float16, their sum is not
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(CompensationError, match=r"NaN/Inf in 'self_attn\.q_proj\.weight' in float16"):
        compensate(model, adapter, [], [2, 3], LaCo())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize(("bias", "named"), [(False, r"mlp\.down_proj\.weight"), (True, r"mlp\.down_proj\.bias")])
def test_layers_whose_parameters_differ_are_refused(bias, named):
    model, adapter, _ = float64_model()
    layer = adapter.layers[3].mlp
    width = layer.down_proj.in_features + (0 if bias else 1)  # an extra bias, or a wider weight
    layer.down_proj = torch.nn.Linear(width, layer.down_proj.out_features, bias=bias, dtype=torch.float64)
    before = {n: p.detach().clone() for n, p in adapter.layers[2].named_parameters()}
    with pytest.raises(CompensationError, match=rf"LaCo cannot merge layer 3 into layer 2: their parameters differ in "
                                                rf"names or shapes \({named}\); use another --compensation"):
        compensate(model, adapter, [], [3], LaCo())
    assert all(torch.equal(p, before[n]) for n, p in adapter.layers[2].named_parameters())


def test_an_offloaded_model_is_merged_in_its_weights_map():
    """A model loaded layer by layer (weights on disk, meta placeholders) is read and written through accelerate."""
    from shortlvlm.compensation.laco import layer_parameters
    from shortlvlm.io.load import load
    from shortlvlm.io.offload import is_offloaded, read_weight

    model, _ = load("toy", dtype=torch.float32, layerwise=True)
    adapter = get_adapter(model)
    assert is_offloaded(adapter.layers[4].mlp.down_proj)
    reference = get_adapter(load("toy", dtype=torch.float32)[0])
    original, expected = layer_state(reference, 4), hand_merge(reference, 4, [5, 6])
    compensate(model, adapter, [], [5, 6], LaCo())
    for name, (module, local) in layer_parameters(adapter.layers[4]).items():
        merged = read_weight(module, local)
        torch.testing.assert_close(merged, expected[name], rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(merged, original[name]), name


def test_merge_is_computed_in_float64_and_written_in_the_parameter_dtype():
    model, adapter, _ = float64_model()
    model = model.to(torch.bfloat16)
    reference = {i: {n: p.double() for n, p in layer_state(adapter, i).items()} for i in (2, 3, 4, 5)}
    compensate(model, adapter, [], [3, 4, 5], LaCo(scale=0.7))
    for name, value in layer_state(adapter, 2).items():
        exact = reference[2][name] + 0.7 * sum(reference[i][name] - reference[2][name] for i in (3, 4, 5))
        assert value.dtype == torch.bfloat16 and torch.equal(value, exact.to(torch.bfloat16)), name


@pytest.mark.parametrize("factor", [0.0, 1e-3])
def test_relative_change_of_a_small_or_zero_layer(factor):
    model, adapter, _ = float64_model()
    with torch.no_grad():
        for parameter in adapter.layers[2].parameters():
            parameter.mul_(factor)
    kept, removed = layer_state(adapter, 2), layer_state(adapter, 3)
    (entry,) = compensate(model, adapter, [], [3], LaCo())
    old = torch.cat([v.reshape(-1) for v in kept.values()])
    change = torch.cat([(removed[n] - kept[n]).reshape(-1) for n in kept])
    if factor == 0:
        assert entry["relative_change"] is None  # |theta_r| = 0: no ratio
    else:
        assert old.norm() < 1 and entry["relative_change"] == pytest.approx(float(change.norm() / old.norm()), rel=1e-6)
    for name, value in layer_state(adapter, 2).items():
        torch.testing.assert_close(value, removed[name], rtol=1e-12, atol=1e-15)  # θ_r + (θ_p - θ_r) = θ_p


def test_a_stale_per_layer_config_list_is_not_read_past_its_end():
    """An inconsistent config (a per-layer list shorter than the layers) is drop_layers' to refuse, not an IndexError
    while reporting the merge."""
    model, adapter, _ = float64_model("gemma3")
    config = model.config.get_text_config()
    config.layer_types = config.layer_types[:4]
    (entry,) = compensate(model, adapter, [], [6], LaCo())
    assert entry["edited_layer"] == 5 and "layer_types_differ" not in entry
