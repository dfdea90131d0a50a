"""The least-squares bridge: streamed statistics, the solve against numpy, the merge against T at run time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shortlvlm import LstSq, drop_layers, get_adapter
from shortlvlm.capture import batch_from_inputs, bypass_layers
from shortlvlm.compensation import CompensationError, compensate, measure_bridges, solve_bridge
from shortlvlm.compensation.lstsq import merge_bridge, residual_fraction
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model


def float64_model(model_type="llava", num_layers=6, seed=0):
    model = tiny_model(model_type, num_layers).double()
    inputs = tiny_inputs(model.config, batch_size=3, seed=seed)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])  # see tests/test_importance.py
    adapter = get_adapter(model)
    return model, adapter, batch_from_inputs(adapter, inputs), inputs


def activations(model, adapter, inputs, below: int):
    """(A, X^r, every layer's output) from plain transformers outputs and a hook: the reference data."""
    written = []
    name = adapter.spec.residual_writers[-1]
    handle = adapter.residual_writers(below)[name].register_forward_hook(
        lambda mod, args, out: written.append(out.detach().clone())
    )
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    handle.remove()
    return written[0], states


def reference_bridge(
    model, adapter, batch, inputs, run: list[int], ridge: float, prior: str = "zero"
) -> np.ndarray:
    """T from numpy on the stacked tokens: lstsq for ridge 0, else the ridge normal equations."""
    below = run[0] - 1
    written, states = activations(model, adapter, inputs, below)
    valid = batch.valid.numpy()
    a = written.numpy()[valid]
    y = states[run[-1] + 1].numpy()[valid] - states[below + 1].numpy()[valid] + a
    if ridge == 0:
        return np.linalg.lstsq(a, y, rcond=None)[0]
    gram = a.T @ a
    damping = ridge * np.trace(gram) / gram.shape[0]
    pull = damping * np.eye(gram.shape[0]) if prior == "identity" else 0
    return np.linalg.solve(gram + damping * np.eye(gram.shape[0]), a.T @ y + pull)


@pytest.mark.parametrize(
    ("ridge", "prior"),
    [(0.0, "zero"), (1e-3, "zero"), (0.1, "zero"), (1.0, "zero"), (0.1, "identity"), (10.0, "identity")],
)
def test_streamed_bridge_equals_numpy_on_the_stacked_tokens(ridge, prior):
    model, adapter, batch, inputs = float64_model()
    measured = measure_bridges(model, adapter, [batch], [2, 3], LstSq(ridge=ridge))
    expected = reference_bridge(model, adapter, batch, inputs, [2, 3], ridge, prior)
    transform = solve_bridge(measured["ata.1"], measured["aty.1"], ridge, prior)
    assert int(measured["tokens.1"]) == int(batch.valid.sum())
    np.testing.assert_allclose(transform.numpy(), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("prior", ["identity", "zero"])
def test_gap_left_is_the_residual_of_the_fit_relative_to_no_bridge(prior):
    model, adapter, batch, inputs = float64_model()
    written, states = activations(model, adapter, inputs, 1)
    valid = batch.valid
    a, gap = written[valid], (states[4] - states[2])[valid]
    (entry,) = compensate(model, adapter, [batch], [2, 3], LstSq(ridge=0.01, prior=prior))
    transform = torch.from_numpy(reference_bridge(*float64_model(), [2, 3], 0.01, prior))
    expected = float(((a @ transform - (gap + a)) ** 2).sum() / (gap**2).sum())
    assert entry["edited_layer"] == 1 and entry["writers"] == ["mlp.down_proj"]
    assert entry["gap_left"] == pytest.approx(expected, rel=1e-5)
    assert 0 < entry["gap_left"] < 1  # the bridge closes part of the gap on the tokens it is fitted on
    distance = float((transform - torch.eye(len(transform), dtype=transform.dtype)).norm() / len(transform) ** 0.5)
    assert entry["distance_from_identity"] == pytest.approx(distance, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_gap_left_is_a_share_at_any_scale_and_zero_without_a_gap(scale):
    """The share of the gap the bridge leaves does not depend on the gap's size (a gap energy below 1 too)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(40, 3, generator=generator, dtype=torch.float64) * scale
    gap = torch.randn(40, 3, generator=generator, dtype=torch.float64) * scale
    y = gap + a
    transform = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    share = residual_fraction(transform, a.T @ a, a.T @ y, (y * y).sum().reshape(1), (gap * gap).sum().reshape(1))
    assert share == pytest.approx(float(((a @ transform - y) ** 2).sum() / (gap**2).sum()), rel=1e-9)
    assert residual_fraction(transform, a.T @ a, a.T @ y, (y * y).sum().reshape(1), torch.zeros(1)) == 0.0


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "idefics3"])
def test_merged_weights_equal_the_map_applied_at_run_time(model_type):
    """The pruned, merged model equals the unpruned one with the run bypassed and T applied by a hook."""
    model, adapter, batch, inputs = float64_model(model_type)
    bridge = LstSq(ridge=0.05)
    measured = measure_bridges(model, adapter, [batch], [2, 3], bridge)
    transform = solve_bridge(measured["ata.1"], measured["aty.1"], bridge.ridge, bridge.prior)
    writer = adapter.residual_writers(1)[adapter.spec.residual_writers[-1]]
    handle = writer.register_forward_hook(lambda mod, args, out: out @ transform)
    with torch.no_grad(), bypass_layers(adapter, [2, 3]):
        expected = model(**inputs, use_cache=False).logits
    handle.remove()
    compensate(model, adapter, [batch], [2, 3], LstSq(ridge=0.05))
    drop_layers(model, [2, 3], adapter)
    with torch.no_grad():
        actual = model(**inputs, use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_a_strong_ridge_toward_identity_leaves_the_gap_as_it_was_and_toward_zero_widens_it():
    model, adapter, batch, _ = float64_model()
    (toward_identity,) = compensate(
        model, adapter, [batch], [3], LstSq(ridge=1e6, prior="identity")
    )
    model, adapter, batch, _ = float64_model()
    (toward_zero,) = compensate(model, adapter, [batch], [3], LstSq(ridge=1e6, prior="zero"))
    assert toward_identity["gap_left"] == pytest.approx(1.0, abs=1e-3)  # T ~ I: as without a bridge
    assert toward_zero["gap_left"] > 1.0  # T ~ 0 silences the writer: worse than no bridge on these tokens


def test_merge_maps_weight_and_bias():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 8, bias=True).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    transform = torch.randn(8, 8, dtype=torch.float64)
    expected = linear(x) @ transform
    merge_bridge(linear, transform)
    torch.testing.assert_close(linear(x).detach(), expected.detach(), rtol=1e-12, atol=1e-12)


def test_every_run_is_bridged_and_a_run_at_layer_zero_is_reported():
    model, adapter, batch, _ = float64_model(num_layers=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = compensate(model, adapter, [batch], [0, 3, 4, 6], LstSq())
    assert [(e["removed"], e["edited_layer"]) for e in report] == [([0], None), ([3, 4], 2), ([6], 5)]
    assert report[0]["reason"] == "run starts at layer 0: nothing below"
    changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert changed == [f"model.language_model.layers.{i}.mlp.down_proj.weight" for i in (2, 5)]


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_every_architecture_is_bridged_or_refused_in_one_line(model_type):
    model = tiny_model(model_type, 5)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    if adapter.spec.writer_post_norms.get(adapter.spec.residual_writers[-1]):
        with pytest.raises(CompensationError, match=r"followed by '.*' \(a norm\).*--compensation none"):
            compensate(model, adapter, [batch], [2], LstSq())
        return
    (entry,) = compensate(model, adapter, [batch], [2], LstSq())
    assert entry["edited_layer"] == 1 and 0 <= entry["gap_left"] < 1


def test_sequential_fits_each_run_on_the_model_pruned_and_bridged_below_it():
    model, adapter, batch, _ = float64_model(num_layers=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sequential = measure_bridges(
        model, adapter, [batch], [0, 2, 5, 6], LstSq(streams="sequential", ridge=0.05)
    )
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # measuring edits nothing
    # Reference: remove layer 0, bridge and remove layer 2 for real, then measure the last run as usual.
    reference, reference_adapter, _, _ = float64_model(num_layers=8)
    drop_layers(reference, [0], reference_adapter)
    compensate(
        reference, reference_adapter, [batch], [1], LstSq(ridge=0.05)
    )  # original layer 2
    drop_layers(reference, [1], reference_adapter)
    measured = measure_bridges(reference, reference_adapter, [batch], [3, 4], LstSq())
    for key in ("ata", "aty", "yty", "gap", "tokens"):
        torch.testing.assert_close(sequential[f"{key}.4"], measured[f"{key}.2"], rtol=1e-10, atol=1e-10)
    unpruned = measure_bridges(
        model, adapter, [batch], [0, 2, 5, 6], LstSq(streams="unpruned")
    )
    assert not torch.allclose(
        sequential["aty.4"], unpruned["aty.4"]
    )  # the streams differ above a bridged cut
    alone = [
        measure_bridges(model, adapter, [batch], [5, 6], LstSq(streams=s))
        for s in ("sequential", "unpruned")
    ]
    assert all(
        torch.equal(alone[0][k], alone[1][k]) for k in alone[1]
    )  # one run, nothing below: the same pass


def test_important_tokens_fit_on_fewer_tokens():
    model, adapter, batch, _ = float64_model()
    every = measure_bridges(model, adapter, [batch], [3], LstSq(tokens="all"))
    important = measure_bridges(model, adapter, [batch], [3], LstSq(tokens="important"))
    assert 0 < int(important["tokens.2"]) < int(every["tokens.2"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda: LstSq(ridge=-1.0), r"LstSq\.ridge \(--lstsq-ridge\) must be a finite number >= 0"),
        (lambda: LstSq(ridge=float("nan")), "finite"),
        (lambda: LstSq(ridge=True), r"LstSq\.ridge \(--lstsq-ridge\) must be a finite number >= 0"),
        (lambda: LstSq(ridge="0.1"), "finite number"),
        (lambda: LstSq(tokens="some"), r"LstSq\.tokens \(--lstsq-tokens\) must be one of all, important"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(CompensationError, match=message):
        options()


@pytest.mark.parametrize(("statistic", "value"), [("aty", float("inf")), ("ata", float("nan"))])
def test_statistics_with_nan_are_refused_and_nothing_is_edited(statistic, value):
    from shortlvlm.compensation.lstsq import apply_bridges

    model, adapter, batch, _ = float64_model()
    measured = measure_bridges(model, adapter, [batch], [3], LstSq())
    measured[f"{statistic}.2"][0, 1] = value
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(CompensationError, match=r"removed layers \[3\] contain NaN/Inf.*--dtype"):
        apply_bridges(model, adapter, [3], LstSq(), measured)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_silent_writer_is_reported_and_left_alone():
    model, adapter, batch, _ = float64_model()
    with torch.no_grad():
        adapter.layers[2].mlp.down_proj.weight.zero_()  # A = 0: nothing to fit a map on
    (entry,) = compensate(model, adapter, [batch], [3], LstSq())
    assert entry["edited_layer"] == 2 and "nothing to fit" in entry["reason"]
    assert torch.count_nonzero(adapter.layers[2].mlp.down_proj.weight) == 0


@pytest.mark.parametrize(("streams", "passes"), [("unpruned", 1), ("sequential", 2)])
def test_fitting_adds_at_most_one_calibration_pass_per_removed_run(monkeypatch, streams, passes):
    import shortlvlm.compensation.runs as runs  # every compensation's pass goes through runs.capture_runs

    calls = []
    real = runs.capture
    monkeypatch.setattr(runs, "capture", lambda *a, **k: calls.append(list(k["skip_layers"])) or real(*a, **k))
    model, adapter, batch, _ = float64_model(num_layers=8)
    compensate(model, adapter, [batch], [0, 3, 4, 6], LstSq(streams=streams))
    assert len(calls) == passes  # runs [3, 4] and [6] have a kept layer below; [0] has none
    if streams == "sequential":
        assert [sorted(skip) for skip in calls] == [[0], [0, 3, 4]]  # each pass skips the runs below it
