"""ScienceQA-IMG: LLaVA's llava_test_CQM-A.json prompts, image questions only, accuracy."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.benchmarks.builders import IMAGE_SIZE, build_scienceqa


@pytest.fixture
def sqa_root(tmp_path):
    return build_scienceqa(tmp_path / "scienceqa")


def test_load_scienceqa_image_questions_only(sqa_root):
    samples = load_benchmark("scienceqa-img", sqa_root)
    assert [s.id for s in samples] == ["1", "3", "4"]  # "2" has no image
    assert samples[0].question == (
        "Context: A hint.\nQuestion 1?\nA. cat\nB. dog\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert [s.answer for s in samples] == ["A", "E", "A"]
    assert samples[1].meta["choices"][4] == "Antarctica"
    assert samples[0].image_path == sqa_root / "images" / "test" / "1" / "image.png"
    assert samples[0].load_image().size == IMAGE_SIZE


def test_scienceqa_accuracy(sqa_root):
    samples = load_benchmark("scienceqa-img", sqa_root)
    result = score_benchmark("scienceqa-img", samples, {"1": "A", "3": "The answer is E.", "4": "B"})
    json.dumps(result)
    # 2 of the 3 image questions right.
    assert result["accuracy"] == pytest.approx(200 / 3) and result["num_correct"] == 2


@pytest.mark.parametrize("answer", ["A.", "(A)", "A)", "Answer: A", "a", "The answer is A"])
def test_scienceqa_formats_eval_science_qa_marks_failed(sqa_root, answer):
    samples = load_benchmark("scienceqa-img", sqa_root)
    predictions = {"1": "A", "3": "E", "4": answer}  # question 4's answer is A
    # eval_science_qa.py parses each of these as FAILED: 2 of 3.
    assert score_benchmark("scienceqa-img", samples, predictions)["accuracy"] == pytest.approx(200 / 3)
    # The lenient reader accepts them: 3 of 3, and says it was lenient.
    lenient = score_benchmark("scienceqa-img", samples, predictions, lenient=True)
    assert lenient["accuracy"] == 100.0 and lenient["parser"] == "lenient"


def test_scienceqa_letter_beyond_the_choices_and_a_missing_answer(sqa_root):
    samples = load_benchmark("scienceqa-img", sqa_root)
    # "E" for a 2-choice question: parsed, get_pred_idx -> -1 -> wrong; "B. dog"-style -> B.
    result = score_benchmark("scienceqa-img", samples, {"1": "E", "3": "E. Antarctica", "4": "A"})
    assert result["accuracy"] == pytest.approx(200 / 3)
    # Question 4 unanswered: eval_science_qa.py gives it the prompt 'Unknown' (no '<image>'), so
    # IMG-Accuracy is over the 2 answered image questions: 1 of 2.
    result = score_benchmark("scienceqa-img", samples, {"1": "A", "3": "B"})
    assert result["accuracy"] == 50.0 and result["num_questions"] == 2 and result["num_missing"] == 1
    assert "leaves them out" in result["notes"][0]
