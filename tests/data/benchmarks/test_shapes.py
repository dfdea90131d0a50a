"""The shapes benchmark: scoring by hand-computed cases, and `shortlvlm eval` end to end."""

from __future__ import annotations

import json

import pytest

from shortlvlm.cli import main
from shortlvlm.data.benchmarks import load_benchmark, shapes
from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.data.benchmarks.shapes import load_shapes, normalize, score_shapes
from shortlvlm.testbeds.toy.model import build_model, build_processor


def sample(i, family, answer, pope=None):
    meta = {"family": family, **({"pope": pope} if pope else {})}
    return BenchSample(id=str(i), image_path=None, question="q", answer=answer, meta=meta)


def test_normalize_reads_the_first_word():
    assert normalize(" Yes, there is.") == "yes"
    assert normalize("b") == "B" and normalize("(C) circle") == "C"
    assert normalize("") == ""


def test_score_by_hand():
    samples = [sample(0, "exists", "yes", "random"), sample(1, "exists", "no", "popular"),
               sample(2, "count", "two"), sample(3, "count", "four"), sample(4, "choice", "B")]
    predictions = {"0": "yes", "1": "yes", "2": "two", "3": "three", "4": "B."}
    result = score_shapes(samples, predictions)
    # 3 of 5 right; exists 1/2; count 1/2; choice 1/1; POPE random 1/1, popular 0/1.
    assert result["accuracy"] == 60.0
    assert result["per_family"] == {"exists": 50.0, "count": 50.0, "choice": 100.0}
    assert result["pope_strategies"] == {"random": 100.0, "popular": 0.0}


def test_load_shapes_is_balanced_and_fixed():
    samples = load_shapes(60)
    assert [s.id for s in samples] == [s.id for s in load_shapes(60)]
    families = [s.meta["family"] for s in samples]
    assert all(families.count(f) == 10 for f in set(families))


def test_limit_takes_the_first_questions_of_the_split_and_refuses_past_it(monkeypatch):
    """--limit bounds a split of fixed extent (issue 32: 100000 was generated and answered, for 854 s)."""
    assert len(load_benchmark("shapes")) == shapes.DEFAULT_SIZE
    monkeypatch.setattr(shapes, "SPLIT_SIZE", 30)
    assert [s.id for s in load_benchmark("shapes", limit=30)] == [f"test-{i}" for i in range(30)]
    with pytest.raises(shapes.BenchmarkDataError, match=r"^--limit 31: the shapes test split is generated and holds "
                                                        r"30 questions \(the first 600 without --limit\); give "
                                                        r"--limit 30 or fewer$"):
        load_benchmark("shapes", limit=31)


@pytest.mark.parametrize("command", ["eval", "compare", "demo"])
def test_the_limit_help_says_shapes_is_generated_and_bounded(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the first N of its generated test split; default 600, at most 10000" in help_text


def test_eval_command_writes_metrics_and_answers(tmp_path, capsys):
    build_model(num_layers=2).save_pretrained(tmp_path / "m")
    build_processor().save_pretrained(tmp_path / "m")
    out = tmp_path / "results.json"
    code = main(["eval", str(tmp_path / "m"), "--bench", "shapes", "--limit", "12", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 12 and len(result["predictions"]) == 12
    assert set(result["per_family"]) == {"exists", "attribute", "count", "spatial", "compositional", "choice"}
    assert 0.0 <= result["accuracy"] <= 100.0


def test_eval_refuses_to_replace_results_without_overwrite(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text("{}")
    assert main(["eval", "toy", "--bench", "shapes", "--limit", "6", "--out", str(out)]) == 2
    assert "results file" in capsys.readouterr().err and out.read_text() == "{}"


def test_eval_without_data_fails_before_loading_the_model(tmp_path, capsys):
    code = main(["eval", str(tmp_path / "no-model-here"), "--bench", "pope", "--out", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--data is required for pope" in err  # not a model-loading error: the model was never loaded
    assert list(tmp_path.iterdir()) == []
