"""`--lenient` reaches the scorer, and the results say which parser produced them."""

from __future__ import annotations

import json

import pytest

import shortlvlm.eval.generate as generate
from shortlvlm.cli import main
from shortlvlm.data.benchmarks import load_benchmark
from shortlvlm.eval.evaluate import evaluate
from tests.data.benchmarks.builders import build_scienceqa


def test_evaluate_scores_officially_unless_lenient(tmp_path, monkeypatch):
    samples = load_benchmark("scienceqa-img", build_scienceqa(tmp_path / "scienceqa"))
    scripted = {"1": "A.", "3": "(E)", "4": "A"}  # eval_science_qa.py fails the first two
    monkeypatch.setattr(generate, "answer_samples", lambda model, processor, chunk, **kwargs: scripted)
    official, _ = evaluate(None, None, "scienceqa-img", samples)
    lenient, _ = evaluate(None, None, "scienceqa-img", samples, lenient=True)
    assert (official["parser"], official["accuracy"]) == ("official", pytest.approx(100 / 3))
    assert (lenient["parser"], lenient["accuracy"]) == ("lenient", 100.0)


def test_cli_eval_records_the_parser(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "toy", "--bench", "shapes", "--limit", "2", "--lenient", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["parser"] == "lenient"
