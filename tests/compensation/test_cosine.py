"""The cosine bridge: the fit against a hand-written Adam loop, the merge against T at run time, the token sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shortlvlm import Cosine, drop_layers, get_adapter
from shortlvlm.capture import batch_from_inputs, bypass_layers
from shortlvlm.compensation import CompensationError, compensate
from shortlvlm.compensation.cosine import apply_cosine, cosine_distance, fit_cosine, measure_cosine, start_map
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model
from tests.compensation.test_lstsq import activations, float64_model

PARTS = ("written", "rest", "target")


def stored(measured: dict, below: int) -> list[torch.Tensor]:
    return [measured[f"{key}.{below}"] for key in PARTS]


def distance64(tokens: list[torch.Tensor], transform: torch.Tensor) -> float:
    return float(cosine_distance(*(part.double() for part in tokens), transform.double()))


def naive_fit(a: torch.Tensor, rest: torch.Tensor, target: torch.Tensor, start: torch.Tensor, lr: float,
              steps: int) -> torch.Tensor:
    """Adam written out (Kingma & Ba, beta 0.9/0.999, eps 1e-8) on mean 1 - cos(rest + a T, target), float64."""
    transform, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for step in range(1, steps + 1):
        t = transform.clone().requires_grad_(True)
        bridged = rest + a @ t
        cos = (bridged * target).sum(1) / (bridged.norm(dim=1) * target.norm(dim=1))
        (1 - cos.mean()).backward()
        g = t.grad
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        transform = transform - lr * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
    return transform


def synthetic(n=40, d=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=generator)
    rest = torch.randn(n, d, generator=generator)
    target = rest + a @ (torch.eye(d) + 0.5 * torch.randn(d, d, generator=generator))
    return a, rest, target + 0.1 * torch.randn(n, d, generator=generator)


@pytest.mark.parametrize("init", ["identity", "lstsq"])
def test_the_fit_equals_adam_written_out_on_a_synthetic_problem(init):
    a, rest, target = synthetic()
    if init == "identity":
        start = torch.eye(6, dtype=torch.float64)
    else:  # the least-squares bridge with LstSq's default ridge 0.01, from numpy's normal equations
        a64, y64 = a.double().numpy(), (target - rest).double().numpy()
        gram = a64.T @ a64
        start = torch.from_numpy(np.linalg.solve(gram + 0.01 * np.trace(gram) / 6 * np.eye(6), a64.T @ y64))
    torch.testing.assert_close(start_map(a, rest, target, init), start, rtol=1e-9, atol=1e-9)
    fitted = fit_cosine(a, rest, target, Cosine(steps=25, lr=1e-2, init=init), [3])
    expected = naive_fit(a.double(), rest.double(), target.double(), start, lr=1e-2, steps=25)
    assert (fitted - start).abs().max() > 0.05  # the fit moved: the comparison is not trivially met
    torch.testing.assert_close(fitted, expected, rtol=0, atol=2e-5)


def test_the_distance_decreases_with_the_steps_and_the_fit_beats_identity_and_the_lstsq_start():
    model, adapter, batch, _ = float64_model()
    tokens = stored(measure_cosine(model, adapter, [batch], [2, 3], Cosine(streams="unpruned")), 1)
    distances = [distance64(tokens, fit_cosine(*tokens, Cosine(steps=steps, lr=1e-2), [2, 3]))
                 for steps in (1, 5, 20, 60)]
    identity = torch.eye(tokens[0].shape[1], dtype=torch.float64)
    assert distance64(tokens, identity) > distances[0] > distances[1] > distances[2] > distances[3]
    start = start_map(*tokens, "lstsq")
    from_lstsq = fit_cosine(*tokens, Cosine(steps=60, lr=1e-3, init="lstsq"), [2, 3])
    assert distance64(tokens, from_lstsq) < distance64(tokens, start) < distance64(tokens, identity)


def test_the_stored_tokens_are_the_streams_of_the_model():
    model, adapter, batch, inputs = float64_model()
    written, states = activations(model, adapter, inputs, 1)
    measured = measure_cosine(model, adapter, [batch], [2, 3], Cosine(streams="unpruned"))
    valid = batch.valid
    torch.testing.assert_close(measured["written.1"], written[valid].float())
    torch.testing.assert_close(measured["rest.1"], (states[2] - written)[valid].float())
    torch.testing.assert_close(measured["target.1"], states[4][valid].float())
    assert int(measured["tokens.1"]) == int(valid.sum())


def test_the_sample_keeps_at_most_max_tokens_rows_of_the_stream_chosen_by_the_seed():
    model, adapter, batch, _ = float64_model()
    every = measure_cosine(model, adapter, [batch], [3], Cosine(streams="unpruned"))["target.2"]
    samples = {seed: measure_cosine(model, adapter, [batch], [3], Cosine(streams="unpruned", max_tokens=7,
                                                                         seed=seed)) for seed in (0, 0, 1)}
    kept = samples[0]["target.2"]
    assert kept.shape == (7, every.shape[1]) and int(samples[0]["tokens.2"]) == len(every) > 7
    rows = [int(torch.cdist(row[None], every).argmin()) for row in kept]
    assert rows == sorted(set(rows))  # distinct rows of the stream, in the order they came
    assert all(torch.equal(every[i], row) for i, row in zip(rows, kept, strict=True))
    again = measure_cosine(model, adapter, [batch], [3], Cosine(streams="unpruned", max_tokens=7))["target.2"]
    assert torch.equal(again, kept)  # the same seed draws the same tokens
    assert not torch.equal(samples[1]["target.2"], kept)  # another seed, another sample


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "idefics3"])
def test_merged_weights_equal_the_map_applied_at_run_time(model_type):
    """The pruned, merged model equals the unpruned one with the run bypassed and T applied by a hook."""
    model, adapter, batch, inputs = float64_model(model_type)
    bridge = Cosine(steps=10, lr=1e-2, streams="unpruned")
    transform = fit_cosine(*stored(measure_cosine(model, adapter, [batch], [2, 3], bridge), 1), bridge, [2, 3])
    assert (transform - torch.eye(len(transform), dtype=torch.float64)).abs().max() > 0.05
    writer = adapter.residual_writers(1)[adapter.spec.residual_writers[-1]]
    handle = writer.register_forward_hook(lambda mod, args, out: out @ transform)
    with torch.no_grad(), bypass_layers(adapter, [2, 3]):
        expected = model(**inputs, use_cache=False).logits
    handle.remove()
    compensate(model, adapter, [batch], [2, 3], bridge)
    drop_layers(model, [2, 3], adapter)
    with torch.no_grad():
        actual = model(**inputs, use_cache=False).logits
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_every_run_is_bridged_deterministically_and_a_run_at_layer_zero_is_reported():
    reports, weights = [], []
    for _ in range(2):
        model, adapter, batch, _ = float64_model(num_layers=8)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        reports.append(compensate(model, adapter, [batch], [0, 3, 4, 6], Cosine(steps=10, lr=1e-2)))
        changed = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
        assert changed == [f"model.language_model.layers.{i}.mlp.down_proj.weight" for i in (2, 5)]
        weights.append([p.detach().clone() for p in model.parameters()])
    report = reports[0]
    assert [(e["removed"], e["edited_layer"]) for e in report] == [([0], None), ([3, 4], 2), ([6], 5)]
    assert report[0]["reason"] == "run starts at layer 0: nothing below"
    assert all(e["cosine_distance_after"] < e["cosine_distance_before"] == e["cosine_distance_start"]
               for e in report[1:])
    assert reports[0] == reports[1] and all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_every_architecture_is_bridged_or_refused_in_one_line(model_type):
    model = tiny_model(model_type, 5)
    adapter = get_adapter(model)
    batch = batch_from_inputs(adapter, tiny_inputs(model.config))
    bridge = Cosine(steps=5, lr=1e-2)
    if adapter.spec.writer_post_norms.get(adapter.spec.residual_writers[-1]):
        with pytest.raises(CompensationError, match=r"cosine bridge.*followed by '.*' \(a norm\).*--compensation none"):
            compensate(model, adapter, [batch], [2], bridge)
        return
    (entry,) = compensate(model, adapter, [batch], [2], bridge)
    assert entry["edited_layer"] == 1 and entry["cosine_distance_after"] < entry["cosine_distance_before"]


def test_sequential_fits_each_run_on_the_model_pruned_and_bridged_below_it():
    bridge = Cosine(steps=10, lr=1e-2)
    model, adapter, batch, _ = float64_model(num_layers=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sequential = measure_cosine(model, adapter, [batch], [0, 2, 5, 6], bridge)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # measuring edits nothing
    assert "transform.1" in sequential and "transform.4" not in sequential  # the last run is fitted by apply
    # Reference: remove layer 0, bridge and remove layer 2 for real, then measure the last run as usual.
    reference, reference_adapter, _, _ = float64_model(num_layers=8)
    drop_layers(reference, [0], reference_adapter)
    compensate(reference, reference_adapter, [batch], [1], bridge)  # original layer 2
    drop_layers(reference, [1], reference_adapter)
    measured = measure_cosine(reference, reference_adapter, [batch], [3, 4], bridge)
    for key in (*PARTS, "tokens"):
        torch.testing.assert_close(sequential[f"{key}.4"], measured[f"{key}.2"], rtol=1e-5, atol=1e-5)
    unpruned = measure_cosine(model, adapter, [batch], [0, 2, 5, 6], Cosine(streams="unpruned"))
    assert not torch.allclose(sequential["rest.4"], unpruned["rest.4"])  # the streams differ above a bridged cut


def test_a_resumed_sequential_job_merges_the_stored_maps():
    model, adapter, batch, _ = float64_model(num_layers=8)
    bridge = Cosine(steps=10, lr=1e-2)
    measured = measure_cosine(model, adapter, [batch], [2, 5], bridge)
    measured["transform.1"] = torch.eye(len(measured["transform.1"]), dtype=torch.float64) * 2
    report = apply_cosine(model, adapter, [2, 5], bridge, measured)
    assert report[0]["distance_from_identity"] == pytest.approx(1.0)  # |2I - I| / sqrt(d): the stored map, not refitted


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (lambda: Cosine(steps=0), r"Cosine\.steps \(--cosine-steps\) must be an integer from 1 to 10000"),
        (lambda: Cosine(steps=10_001), r"Cosine\.steps \(--cosine-steps\) must be an integer from 1 to 10000"),
        (lambda: Cosine(steps=2.5), r"--cosine-steps"),
        (lambda: Cosine(lr=0.0), r"Cosine\.lr \(--cosine-lr\) must be a finite number > 0"),
        (lambda: Cosine(lr=float("nan")), r"--cosine-lr"),
        (lambda: Cosine(lr="0.1"), r"Cosine\.lr \(--cosine-lr\) must be a finite number > 0"),  # not a TypeError
        (lambda: Cosine(init="zero"), r"Cosine\.init \(--cosine-init\) must be one of identity, lstsq"),
        (lambda: Cosine(tokens="some"), r"Cosine\.tokens \(--cosine-tokens\) must be one of all, important"),
        (lambda: Cosine(max_tokens=0), r"Cosine\.max_tokens \(--cosine-max-tokens\) must be a positive integer"),
        (lambda: Cosine(streams="both"), r"--cosine-streams"),
        (lambda: Cosine(seed=-1), r"Cosine\.seed \(--cosine-seed\) must be a non-negative integer"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(CompensationError, match=message):
        options()


def test_the_bounds_themselves_are_accepted():
    assert Cosine(steps=1).steps == 1 and Cosine(steps=10_000).steps == 10_000
    assert Cosine(lr=1e-12).lr == 1e-12


def test_tokens_with_nan_are_refused_and_nothing_is_edited():
    model, adapter, batch, _ = float64_model(num_layers=8)
    measured = measure_cosine(model, adapter, [batch], [3, 6], Cosine(streams="unpruned"))
    measured["rest.5"][0, 0] = float("nan")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(CompensationError, match=r"removed layers \[6\] contain NaN/Inf.*--dtype"):
        apply_cosine(model, adapter, [3, 6], Cosine(steps=2), measured)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # run [3] was fitted, not merged


def test_a_diverging_fit_is_refused_with_the_fix():
    a, rest, target = synthetic()
    with pytest.raises(CompensationError, match=r"\[4\] reached a NaN/Inf distance.*--cosine-lr.*--cosine-init lstsq"):
        fit_cosine(a, rest, target, Cosine(steps=100, lr=1e37), [4])  # steps of ~1e37: A T overflows float32


def test_a_silent_writer_is_reported_and_left_alone():
    model, adapter, batch, _ = float64_model()
    with torch.no_grad():
        adapter.layers[2].mlp.down_proj.weight.zero_()  # A = 0: nothing to fit a map on
    (entry,) = compensate(model, adapter, [batch], [3], Cosine(steps=2))
    assert entry["edited_layer"] == 2 and "nothing to fit" in entry["reason"]
    assert torch.count_nonzero(adapter.layers[2].mlp.down_proj.weight) == 0


@pytest.mark.parametrize(("streams", "passes"), [("unpruned", 1), ("sequential", 2)])
def test_fitting_adds_at_most_one_calibration_pass_per_removed_run(monkeypatch, streams, passes):
    import shortlvlm.compensation.runs as runs  # every compensation's pass goes through runs.capture_runs

    calls = []
    real = runs.capture
    monkeypatch.setattr(runs, "capture", lambda *a, **k: calls.append(list(k["skip_layers"])) or real(*a, **k))
    model, adapter, batch, _ = float64_model(num_layers=8)
    compensate(model, adapter, [batch], [0, 3, 4, 6], Cosine(steps=2, streams=streams))
    assert len(calls) == passes  # runs [3, 4] and [6] have a kept layer below; [0] has none
    if streams == "sequential":
        assert [sorted(skip) for skip in calls] == [[0], [0, 3, 4]]  # each pass skips the runs below it


def test_stored_tokens_are_reused_by_the_stage_cache_unless_the_fit_shaped_them(tmp_path):
    """As tests/resume/test_stages.py checks it for LstSq: the stage is reused when its key matches, and the
    reused tokens give the identical merge; sequential tokens depend on the fit below, unpruned ones do not."""
    from shortlvlm.data.calibration import toy_calibration
    from shortlvlm.io.load import load
    from shortlvlm.pruning import prune
    from shortlvlm.resume import StageCache
    from shortlvlm.scoring import TISCosine

    calib = toy_calibration(8)

    def bridged(cache, **options):
        model, processor = load("toy", dtype=torch.float32)
        return prune(model, processor, 0.25, scorer=TISCosine(), compensation=Cosine(**options), calibration=calib,
                     cache=StageCache(cache, announce=False))

    first, _ = bridged(tmp_path / "sequential", steps=5)
    assert (tmp_path / "sequential" / "cosine.safetensors").exists()
    again = StageCache(tmp_path / "sequential", announce=False)
    model, processor = load("toy", dtype=torch.float32)
    same, _ = prune(model, processor, 0.25, scorer=TISCosine(), compensation=Cosine(steps=5), calibration=calib,
                    cache=again)
    assert again.reused == ["plan", "cosine"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), same.state_dict().values(), strict=True))
    for streams, reused in (("sequential", ["plan"]), ("unpruned", ["plan", "cosine"])):
        bridged(tmp_path / streams, steps=5, streams=streams)
        other = StageCache(tmp_path / streams, announce=False)
        model, processor = load("toy", dtype=torch.float32)
        prune(model, processor, 0.25, scorer=TISCosine(), compensation=Cosine(steps=6, streams=streams),
              calibration=calib, cache=other)
        assert other.reused == reused  # more steps: the sequential streams above a bridged run change
