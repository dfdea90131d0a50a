"""POPE: loading LLaVA's layout and llava/eval/eval_pope.py's metrics (expectations worked out by hand from it)."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.benchmarks.builders import IMAGE_SIZE, build_pope


@pytest.fixture
def pope_root(tmp_path):
    return build_pope(tmp_path / "pope")


def test_load_pope(pope_root):
    samples = load_benchmark("pope", pope_root)
    assert [s.id for s in samples] == [str(i) for i in range(1, 9)]
    first = samples[0]
    assert (
        first.question == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    )
    assert first.answer == "yes" and first.meta == {"category": "adversarial"}
    assert first.image_path == pope_root / "val2014" / "COCO_val2014_000000000001.jpg"
    assert first.load_image().size == IMAGE_SIZE
    assert [s.answer for s in samples if s.meta["category"] == "random"] == ["yes", "no"]
    assert len(load_benchmark("pope", pope_root, limit=3)) == 3


def test_pope_metrics(pope_root):
    samples = load_benchmark("pope", pope_root)
    predictions = {
        # adversarial, labels yes/no/yes/no -> TP, FP, FN, TN
        "1": "Yes", "2": "Yes, there is a cat.", "3": "No", "4": "There is no bus.",
        # popular, labels yes/no -> TP, TN
        "5": "Yes", "6": "No.",
        # random, labels yes/no -> TP, FP
        "7": "Yes", "8": "Yes",
    }  # fmt: skip
    result = score_benchmark("pope", samples, predictions)
    json.dumps(result)
    adversarial, popular, random = (result["categories"][c] for c in ("adversarial", "popular", "random"))
    # adversarial: TP=FP=TN=FN=1 -> accuracy 2/4, precision 1/2, recall 1/2, F1 50, yes-ratio 2/4.
    assert (adversarial["tp"], adversarial["fp"], adversarial["tn"], adversarial["fn"]) == (1, 1, 1, 1)
    assert (
        adversarial["accuracy"]
        == adversarial["precision"]
        == adversarial["recall"]
        == adversarial["f1"]
        == 50.0
    )
    assert adversarial["yes_ratio"] == 50.0
    # popular: both right -> 100 everywhere, one "yes" of two -> yes-ratio 50.
    assert popular["accuracy"] == popular["f1"] == 100.0 and popular["yes_ratio"] == 50.0
    # random: TP=1, FP=1 -> accuracy 50, precision 50, recall 100, F1 2*50*100/150 = 66.67, yes-ratio 100.
    assert random["accuracy"] == 50.0 and random["precision"] == 50.0 and random["recall"] == 100.0
    assert random["f1"] == pytest.approx(200 / 3) and random["yes_ratio"] == 100.0
    # mean over categories: accuracy (50+100+50)/3, F1 (50+100+66.67)/3.
    assert result["mean"]["accuracy"] == pytest.approx(200 / 3)
    assert result["mean"]["f1"] == pytest.approx((50 + 100 + 200 / 3) / 3)
    assert result["num_missing"] == 0


def test_pope_missing_prediction_is_counted(pope_root):
    samples = load_benchmark("pope", pope_root)
    result = score_benchmark("pope", samples, {"1": "Yes"})
    assert result["num_missing"] == 7


def test_pope_whitespace_after_no_reads_as_yes_as_eval_pope(pope_root):
    samples = load_benchmark("pope", pope_root)
    # random (labels yes, no): answers "Yes", "No\tthere is none". eval_pope.py splits on " " only, so
    # the second has no word "No": read as yes -> TP=1, FP=1 -> accuracy 50, F1 2*50*100/150.
    answers = {"7": "Yes", "8": "No\tthere is none"}
    random = score_benchmark("pope", samples, answers)["categories"]["random"]
    assert (random["tp"], random["fp"], random["tn"], random["fn"]) == (1, 1, 0, 0)
    assert random["accuracy"] == 50.0 and random["f1"] == pytest.approx(200 / 3)
    lenient = score_benchmark("pope", samples, answers, lenient=True)
    assert lenient["categories"]["random"]["accuracy"] == 100.0 and lenient["parser"] == "lenient"


def test_pope_where_eval_pope_divides_by_zero(pope_root):
    samples = load_benchmark("pope", pope_root)
    answers = {
        "1": "No", "2": "No", "3": "No", "4": "No",  # adversarial: no "yes" answer -> TP+FP = 0 (precision)
        "5": "No", "6": "Yes",  # popular (labels yes, no): TP = 0, FP = 1, FN = 1 -> F1's 0/0
        "7": "Yes", "8": "No",  # random: all right
    }  # fmt: skip
    result = score_benchmark("pope", samples, answers)
    adversarial, popular = result["categories"]["adversarial"], result["categories"]["popular"]
    # adversarial: TN=2, FN=2 -> accuracy 50; precision 0/0 and F1 0/0 -> 0; recall 0/2 = 0.
    assert (adversarial["accuracy"], adversarial["precision"], adversarial["recall"], adversarial["f1"]) == (
        50.0, 0.0, 0.0, 0.0,
    )  # fmt: skip
    # popular: accuracy 0, precision 0/1, recall 0/1, F1 0/0 -> 0.
    assert (popular["accuracy"], popular["precision"], popular["recall"], popular["f1"]) == (0.0, 0.0, 0.0, 0.0)
    notes = result["notes"]
    assert len(notes) == 2 and "adversarial" in notes[0] and "precision, F1" in notes[0]
    assert "popular" in notes[1] and "F1 reported as 0" in notes[1]
    assert result["mean"]["f1"] == pytest.approx(100 / 3)  # (0 + 0 + 100) / 3
