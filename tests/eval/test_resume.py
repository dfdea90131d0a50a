"""`eval` is resumable: answers are appended as they come and reused by the same command."""

from __future__ import annotations

import json
import logging

import pytest

import shortlvlm.eval.generate as generate
from shortlvlm import load
from shortlvlm.cli import main
from shortlvlm.data.benchmarks.shapes import load_shapes
from shortlvlm.eval.evaluate import AnswerLog, evaluate
from shortlvlm.resume.answers import read_partial_answers


def test_interrupted_answers_are_reused_and_only_the_rest_is_answered(tmp_path, monkeypatch, caplog):
    model, processor = load("toy")
    samples = load_shapes(24)
    partial, key = tmp_path / "p.jsonl", {"model": "toy"}
    reference, _ = evaluate(model, processor, "shapes", samples, batch_size=4)
    original = generate.answer_samples
    asked: list[str] = []

    def dying(model, processor, chunk, **kwargs):
        if asked:
            raise KeyboardInterrupt  # the second chunk "kills" the run
        asked.extend(s.id for s in chunk)
        return original(model, processor, chunk, **kwargs)

    monkeypatch.setattr(generate, "answer_samples", dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, processor, "shapes", samples, batch_size=4, resume=AnswerLog(partial, key))
    saved = read_partial_answers(partial, key)
    assert sorted(saved) == sorted(asked) and len(saved) == 16
    assert read_partial_answers(partial, {"model": "other"}) == {}

    with partial.open("a") as handle:
        handle.write('{"id": "torn')  # a line cut short by a kill is ignored
    resumed: list[str] = []

    def counting(model, processor, chunk, **kwargs):
        resumed.extend(s.id for s in chunk)
        return original(model, processor, chunk, **kwargs)

    monkeypatch.setattr(generate, "answer_samples", counting)
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        metrics, predictions = evaluate(model, processor, "shapes", samples, batch_size=4,
                                        resume=AnswerLog(partial, key))
    assert f"resuming: 16 of 24 answers found in {partial}" in caplog.messages
    assert sorted(resumed) == sorted(s.id for s in samples if s.id not in saved)
    assert metrics == reference and len(predictions) == 24


def test_cli_eval_removes_its_partial_file_when_done(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "toy", "--bench", "shapes", "--limit", "8", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_samples"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
