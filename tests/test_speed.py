"""`bench`: interleaved measurement, medians and ratios, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from shortlvlm import drop_layers, load
from shortlvlm import speed as speed_module
from shortlvlm.cli import main
from shortlvlm.speed import BenchModel, run_bench, summarize, synthetic_image


def fake_entry(label, layers, prefill, gen1, genn, params=10):
    entry = BenchModel(label, torch.nn.Linear(params, 1, bias=False), None, layers)
    entry.rounds = {"prefill": prefill, "generate_1": gen1, "generate_n": genn, "peak_bytes": [2**20] * len(prefill)}
    return entry


def test_medians_after_warmup_and_ratios_against_the_first_model():
    base = fake_entry("a", 16, [9.0, 0.10, 0.30, 0.20], [9.0, 0.2, 0.2, 0.2], [9.0, 1.7, 1.7, 1.7])
    small = fake_entry("b", 8, [9.0, 0.05, 0.05, 0.05], [9.0, 0.1, 0.1, 0.1], [9.0, 0.85, 0.85, 0.85])
    rows = summarize([base, small], answer_tokens=16, warmup=1)
    assert rows[0]["prefill_ms"] == pytest.approx(200.0)  # median of 0.10, 0.30, 0.20; warm-up dropped
    assert rows[0]["decode_tokens_per_s"] == pytest.approx(15 / 1.5)
    assert rows[0]["samples_per_s"] == pytest.approx(1 / 1.7)
    assert rows[1]["ideal_speedup"] == 2.0
    assert rows[1]["prefill_speedup"] == pytest.approx(4.0)
    assert rows[1]["decode_speedup"] == pytest.approx((15 / 0.75) / (15 / 1.5))
    assert rows[1]["samples_speedup"] == pytest.approx(2.0)
    assert rows[0]["rounds"] == 3 and rows[0]["peak_memory_mib"] == 1.0


def pruned_toy():
    model, processor = load("toy")
    drop_layers(model, [10, 11, 12, 13, 14])
    return model, processor


def test_models_are_measured_interleaved_and_generate_the_same_length(monkeypatch):
    order = []
    original = speed_module.measure_round

    def recording(entry, answer_tokens):
        order.append(entry.label)
        original(entry, answer_tokens)

    monkeypatch.setattr(speed_module, "measure_round", recording)
    rows = run_bench([("full", lambda: load("toy")), ("pruned", pruned_toy)], rounds=2, warmup=1,
                     answer_tokens=4, progress=False)
    assert order == ["full", "pruned"] * 3
    assert [r["decoder_layers"] for r in rows] == [16, 11]
    assert rows[1]["ideal_speedup"] == pytest.approx(16 / 11)
    assert rows[1]["parameters"] < rows[0]["parameters"] and rows[1]["parameter_ratio"] < 1
    assert all(len(r["raw_seconds"]["generate_n"]) == 3 for r in rows)
    assert all(r["prefill_ms"] > 0 and r["samples_per_s"] > 0 for r in rows)


def test_synthetic_image_is_deterministic():
    assert synthetic_image(32).tobytes() == synthetic_image(32).tobytes()
    assert synthetic_image(32).size == (32, 32)


def test_cli_bench_writes_results(tmp_path, capsys):
    pruned = tmp_path / "pruned"
    assert main(["prune", "toy", "--layers", "3,4", "--out", str(pruned)]) == 0
    out = tmp_path / "bench.json"
    code = main(["bench", "toy", str(pruned), "--rounds", "1", "--warmup", "0", "--answer-tokens", "3",
                 "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "| toy | 16 |" in stdout and "| 14 |" in stdout
    result = json.loads(out.read_text())
    assert [r["decoder_layers"] for r in result["rows"]] == [16, 14]


@pytest.mark.parametrize(("argv", "message"), [
    (["--rounds", "0"], "--rounds"), (["--answer-tokens", "1"], "--answer-tokens"),
    (["--image", "missing.png"], "cannot read --image"),
])
def test_cli_bench_bad_options_fail_before_loading(tmp_path, capsys, argv, message):
    code = main(["bench", "toy", "--out", str(tmp_path / "b.json"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Loading weights" not in err


def test_cli_bench_missing_model_is_named(tmp_path, capsys):
    code = main(["bench", "toy", str(tmp_path / "nope"), "--out", str(tmp_path / "b.json")])
    assert code == 2 and "nope" in capsys.readouterr().err
