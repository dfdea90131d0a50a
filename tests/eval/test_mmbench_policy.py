"""`--mmbench-policy` reaches MMBench's scorer, and the results and the printed metrics name the policy."""

from __future__ import annotations

import json

import pytest

import shortlvlm.cli.eval as cli_eval
import shortlvlm.eval.generate as generate
from shortlvlm.cli import main
from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from shortlvlm.eval.evaluate import evaluate
from tests.data.benchmarks.builders import build_mmbench, build_pope, build_scienceqa


def test_evaluate_passes_the_policy_to_mmbench(tmp_path, monkeypatch):
    samples = load_benchmark("mmbench", build_mmbench(tmp_path / "mmbench"), limit=1)  # answers C, B, A, D
    # Row 2000000's "The answer is A" is unreadable by MMBench's rules; lmms-eval's extraction reads A.
    scripted = {"0": "C", "1000000": "B", "2000000": "The answer is A", "3000000": "D"}
    monkeypatch.setattr(generate, "answer_samples", lambda model, processor, chunk, **kwargs: scripted)
    exact, _ = evaluate(None, None, "mmbench", samples)
    extracted, _ = evaluate(None, None, "mmbench", samples, mmbench_policy="lmms-eval")
    assert (exact["mmbench_policy"], exact["circular_accuracy"]) == ("exact", 0.0)
    assert (extracted["mmbench_policy"], extracted["circular_accuracy"]) == ("lmms-eval", 100.0)


def test_cli_passes_the_policy_and_prints_it(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run_eval(source, out, request):
        seen.update(request.to_dict())
        return {"benchmark": request.bench, "circular_accuracy": 50.0, "mmbench_policy": request.mmbench_policy}

    monkeypatch.setattr(cli_eval, "run_eval", fake_run_eval)
    out = str(tmp_path / "r.json")
    assert main(["eval", "toy", "--bench", "mmbench", "--mmbench-policy", "lmms-eval", "--out", out]) == 0
    assert seen["mmbench_policy"] == "lmms-eval" and seen["bench"] == "mmbench"
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.rindex("}") + 1])["mmbench_policy"] == "lmms-eval"
    assert main(["eval", "toy", "--bench", "mmbench", "--out", out]) == 0
    assert seen["mmbench_policy"] == "exact"  # the default


@pytest.mark.parametrize("bench", ["pope", "scienceqa-img"])
def test_other_benchmarks_have_no_mmbench_policy_key(tmp_path, bench):
    build = {"pope": build_pope, "scienceqa-img": build_scienceqa}[bench]
    samples = load_benchmark(bench, build(tmp_path / bench))
    assert "mmbench_policy" not in score_benchmark(bench, samples, {})
