"""Magnitude compensation (Prune&Comp): the factor against a hand computation, the merge against a run-time scale."""

from __future__ import annotations

import pytest
import torch

from shortlvlm import Magnitude, drop_layers, get_adapter
from shortlvlm.capture import batch_from_inputs, bypass_layers
from shortlvlm.compensation import CompensationError, compensate, magnitude_factor, measure_magnitudes
from shortlvlm.compensation.magnitude import apply_magnitudes
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model


def float64_model(model_type="llava", num_layers=6):
    model = tiny_model(model_type, num_layers).double()
    for module in model.modules():  # the norms' epsilon is all that keeps a rescaled stream from being exact
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = 1e-12
        elif "Norm" in type(module).__name__ and isinstance(getattr(module, "eps", None), float):
            module.eps = 1e-12
    return model, get_adapter(model)


def float64_batch(model, adapter, seed=0, batch_size=3, padded=False):
    inputs = tiny_inputs(model.config, batch_size=batch_size, seed=seed)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    if not padded:  # see tests/test_importance.py
        inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    return inputs, batch_from_inputs(adapter, inputs)


def hand_factor(model, batches_and_inputs, run: list[int]) -> float:
    """Per sample and channel mean|X^{pm}| / mean|X^r| over its real tokens, averaged over samples, then channels."""
    ratios = []
    for inputs, batch in batches_and_inputs:
        with torch.no_grad():
            states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
        start, end = states[run[0]], states[run[-1] + 1]  # leaving the kept layer below; leaving the run
        for sample in range(start.shape[0]):
            tokens = batch.valid[sample]
            ratios.append(end[sample][tokens].abs().mean(dim=0) / start[sample][tokens].abs().mean(dim=0))
    return float(torch.stack(ratios).mean(dim=0).mean())


def pooled_factor(model, batches_and_inputs, run: list[int]) -> float:
    starts, ends = [], []
    for inputs, batch in batches_and_inputs:
        with torch.no_grad():
            states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
        starts.append(states[run[0]][batch.valid].abs())
        ends.append(states[run[-1] + 1][batch.valid].abs())
    return float((torch.cat(ends).mean(dim=0) / torch.cat(starts).mean(dim=0)).mean())


def scale_output(factor: float):
    """A forward hook multiplying a decoder layer's output (the stream leaving it) by `factor`."""
    def hook(module, args, output):
        return (output[0] * factor, *output[1:]) if isinstance(output, tuple) else output * factor
    return hook


def test_factor_equals_the_hand_computation_over_samples_then_channels():
    model, adapter = float64_model()
    data = [float64_batch(model, adapter, seed=0, padded=True), float64_batch(model, adapter, seed=1, batch_size=2)]
    measured = measure_magnitudes(model, adapter, [b for _, b in data], [2, 3], Magnitude())
    expected = hand_factor(model, data, [2, 3])
    assert int(measured["samples.1"]) == 5 and len({int(n) for n in data[0][1].valid.sum(dim=1)}) > 1  # padded
    assert int(measured["tokens.1"]) == sum(int(b.valid.sum()) for _, b in data)
    assert magnitude_factor(measured, 1) == pytest.approx(expected, rel=1e-12)
    assert measured["ratio.1"].dtype == torch.float64
    pooled = pooled_factor(model, data, [2, 3])  # the ratio of means pooled over every token is another number
    assert magnitude_factor(measured, 1) != pytest.approx(pooled, rel=1e-6)


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "idefics3", "paligemma"])
def test_merged_weights_equal_the_stream_scaled_at_run_time(model_type):
    """The pruned, merged model equals the unpruned one with the runs bypassed and the stream leaving each kept
    layer below a run multiplied by its factor (Prune&Comp's edit, which scales everything below the cut)."""
    model, adapter = float64_model(model_type)
    inputs, batch = float64_batch(model, adapter)
    removed = [1, 3, 4]
    measured = measure_magnitudes(model, adapter, [batch], removed, Magnitude())
    factors = {below: magnitude_factor(measured, below) for below in (0, 2)}
    assert all(abs(f - 1) > 1e-3 for f in factors.values())  # a gap to close, so the check below means something
    with torch.no_grad(), bypass_layers(adapter, removed):
        uncompensated = model(**inputs, use_cache=False).logits
        handles = [adapter.layers[below].register_forward_hook(scale_output(f)) for below, f in factors.items()]
        expected = model(**inputs, use_cache=False).logits
    for handle in handles:
        handle.remove()
    report = compensate(model, adapter, [batch], removed, Magnitude())
    assert [e["factor"] for e in report] == pytest.approx(list(factors.values()), rel=1e-5)
    drop_layers(model, removed, adapter)
    with torch.no_grad():
        actual = model(**inputs, use_cache=False).logits
    # The two see the stream at different scales, and transformers' RMSNorm computes in float32 even for a float64
    # model: they agree to ~1e-7 (measured), while the compensation moves the logits by 1e-3 to 0.2.
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    assert (actual - uncompensated).abs().max() > 1e-3


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_every_architecture_is_compensated_or_refused_in_one_line(model_type):
    model = tiny_model(model_type, 5)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if adapter.spec.writer_post_norms:
        refusal = (r"^magnitude compensation cannot be written as a weight edit for .*: '.*' is followed by '.*' "
                   r"\(a norm\).*--compensation none for this model$")
        with pytest.raises(CompensationError, match=refusal) as refused:
            compensate(model, adapter, [batch], [2], Magnitude())
        assert "\n" not in str(refused.value)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        return
    (entry,) = compensate(model, adapter, [batch], [2], Magnitude())
    assert entry["edited_layer"] == 3 and entry["edited_layers"] == [3, 4] and entry["factor"] > 0
    writers = {id(w) for layer in (3, 4) for w in adapter.residual_writers(layer).values()}
    edited = {id(m) for m in model.modules() for p in m.parameters(recurse=False)
              if not torch.equal(p, before[next(n for n, q in model.named_parameters() if q is p)])}
    assert edited == writers  # both writers of every kept layer above, nothing else


def test_every_run_is_compensated_and_runs_at_layer_zero_or_at_the_top_are_reported():
    model, adapter = float64_model(num_layers=8)
    _, batch = float64_batch(model, adapter)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = compensate(model, adapter, [batch], [0, 3, 4, 7], Magnitude())
    assert [(e["removed"], e["edited_layer"]) for e in report] == [([0], None), ([3, 4], 5), ([7], None)]
    assert report[0]["reason"] == "run starts at layer 0: nothing below"
    assert "final norm" in report[2]["reason"] and report[2]["factor"] > 0
    assert report[1]["edited_layers"] == [5, 6] and report[1]["tokens"] == int(batch.valid.sum())
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert changed == [f"model.language_model.layers.{i}.{w}.weight" for i in (5, 6)
                       for w in ("mlp.down_proj", "self_attn.o_proj")]
    factor = report[1]["factor"]
    for i in (5, 6):
        for name, writer in adapter.residual_writers(i).items():
            original = before[f"model.language_model.layers.{i}.{name}.weight"]
            torch.testing.assert_close(writer.weight, original / factor, rtol=1e-6, atol=0)


def test_writers_above_several_runs_carry_the_product_of_their_inverse_factors():
    model, adapter = float64_model(num_layers=8)
    _, batch = float64_batch(model, adapter)
    measured = measure_magnitudes(model, adapter, [batch], [2, 5], Magnitude())
    first, second = magnitude_factor(measured, 1), magnitude_factor(measured, 4)
    before = {i: adapter.residual_writers(i)["mlp.down_proj"].weight.detach().clone() for i in (1, 3, 4, 6, 7)}
    apply_magnitudes(model, adapter, [2, 5], measured)
    expected = {1: 1.0, 3: 1 / first, 4: 1 / first, 6: 1 / (first * second), 7: 1 / (first * second)}
    for i, scale in expected.items():
        torch.testing.assert_close(adapter.residual_writers(i)["mlp.down_proj"].weight, before[i] * scale,
                                   rtol=1e-12, atol=0)


def test_important_tokens_estimate_on_fewer_tokens():
    model, adapter = float64_model()
    _, batch = float64_batch(model, adapter)
    every = measure_magnitudes(model, adapter, [batch], [3], Magnitude(tokens="all"))
    important = measure_magnitudes(model, adapter, [batch], [3], Magnitude(tokens="important"))
    assert 0 < int(important["tokens.2"]) < int(every["tokens.2"])
    assert magnitude_factor(important, 2) != pytest.approx(magnitude_factor(every, 2), rel=1e-9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda: Magnitude(tokens="some"), r"Magnitude\.tokens \(--magnitude-tokens\) must be one of all, important"),
        (lambda: Magnitude.from_dict({"tokens": "all", "scale": 2}), "scale"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(CompensationError, match=message):
        options()


def test_options_round_trip_through_the_plan_record():
    options = Magnitude(tokens="important")
    assert options.to_dict() == {"tokens": "important"}
    assert Magnitude.from_dict(options.to_dict()) == options
    assert Magnitude().statistics_key() == {"tokens": "all"}


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_statistics_with_nan_are_refused_and_nothing_is_edited(poison):
    model, adapter = float64_model(num_layers=8)
    _, batch = float64_batch(model, adapter)
    measured = measure_magnitudes(model, adapter, [batch], [2, 5], Magnitude())
    measured["ratio.4"][0] = poison  # the second run: the first must not be merged before the refusal
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(CompensationError, match=r"removed layers \[5\] contain NaN/Inf.*--dtype"):
        apply_magnitudes(model, adapter, [2, 5], measured)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_zero_factor_is_refused_before_it_divides():
    model, adapter = float64_model(num_layers=8)
    _, batch = float64_batch(model, adapter)
    measured = measure_magnitudes(model, adapter, [batch], [2, 5], Magnitude())
    measured["ratio.4"].zero_()  # the run's streams would have vanished: no factor to divide by
    with pytest.raises(CompensationError, match=r"removed layers \[5\] contain NaN/Inf \(or no positive factor\)"):
        apply_magnitudes(model, adapter, [2, 5], measured)


def test_a_run_without_selected_tokens_is_reported_and_left_alone():
    model, adapter = float64_model()
    _, batch = float64_batch(model, adapter)
    measured = measure_magnitudes(model, adapter, [batch], [3], Magnitude())
    measured["samples.2"] = torch.tensor([0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    (entry,) = apply_magnitudes(model, adapter, [3], measured)
    assert entry["edited_layer"] == 4 and "nothing to estimate" in entry["reason"]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_measuring_adds_one_calibration_pass_and_edits_nothing(monkeypatch):
    import shortlvlm.compensation.runs as runs  # every compensation's pass goes through runs.capture_runs

    calls = []
    real = runs.capture
    monkeypatch.setattr(runs, "capture", lambda *a, **k: calls.append(list(k["skip_layers"])) or real(*a, **k))
    model, adapter = float64_model(num_layers=8)
    _, batch = float64_batch(model, adapter)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    measured = measure_magnitudes(model, adapter, [batch], [0, 3, 4, 6], Magnitude())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert sorted(measured) == ["ratio.2", "ratio.5", "samples.2", "samples.5", "tokens.2", "tokens.5"]
    compensate(model, adapter, [batch], [0, 3, 4, 6], Magnitude())
    assert calls == [[], []]  # one pass over the unpruned model each time, for every run at once


def test_a_compare_setting_names_the_magnitude_compensation_with_its_options():
    from shortlvlm.jobs.compare_spec import parse_methods

    (spec,) = parse_methods("tis-loss+magnitude[tokens=important]")
    assert spec.compensation == "magnitude" and spec.make_compensation() == Magnitude(tokens="important")
