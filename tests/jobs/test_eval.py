"""The eval job resumes only its own answers: other weights in the same folder answer afresh."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import shortlvlm.eval.generate as generate
from shortlvlm.jobs.eval import EvalRequest, run_eval
from shortlvlm.jobs.source import ModelSource
from shortlvlm.resume.answers import read_partial_answers
from shortlvlm.testbeds.toy import TOY_CHECKPOINT

LIMIT, BATCH = 16, 2  # two chunks of 8 (batch size x 4): the interruption comes after the first


def interrupted_eval(source: ModelSource, out, monkeypatch) -> dict[str, str]:
    """Answers a killed `eval` left beside `out`: the first chunk answered, the second never."""
    original, calls = generate.answer_samples, []

    def dying(model, processor, chunk, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(chunk))
        return original(model, processor, chunk, **kwargs)

    monkeypatch.setattr(generate, "answer_samples", dying)
    with pytest.raises(KeyboardInterrupt):
        run_eval(source, out, EvalRequest(bench="shapes", limit=LIMIT, eval_batch_size=BATCH))
    monkeypatch.setattr(generate, "answer_samples", original)
    partial = out.with_name(f".{out.name}.partial.jsonl")
    key = json.loads(partial.read_text().splitlines()[0])["key"]
    return read_partial_answers(partial, key)


def test_a_rerun_on_other_weights_in_the_same_folder_answers_afresh(tmp_path, monkeypatch, caplog):
    from shortlvlm.cli import main

    model_dir = shutil.copytree(TOY_CHECKPOINT, tmp_path / "toycopy")
    out = tmp_path / "r.json"
    old_answers = interrupted_eval(ModelSource(str(model_dir)), out, monkeypatch)
    assert len(old_answers) == 8
    # The folder's model is replaced by a pruned one (what `prune ... --out` wrote, copied over it).
    pruned = tmp_path / "pruned"
    assert main(["prune", str(model_dir), "--layers", "1,3,5,7,9", "--out", str(pruned), "--no-verify"]) == 0
    for file in pruned.iterdir():
        shutil.copy2(file, model_dir / file.name)
    request = EvalRequest(bench="shapes", limit=LIMIT, eval_batch_size=BATCH)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shortlvlm"):
        resumed = run_eval(ModelSource(str(model_dir)), out, request)
    assert not any("resuming" in line for line in caplog.messages)  # tests/eval/test_resume.py hears it when it is
    fresh = run_eval(ModelSource(str(pruned)), tmp_path / "fresh.json", request)
    answers = json.loads(out.read_text())["predictions"]
    assert answers == json.loads((tmp_path / "fresh.json").read_text())["predictions"]
    assert resumed == fresh
    assert any(answers[i] != a for i, a in old_answers.items())  # reusing them would have changed the result
