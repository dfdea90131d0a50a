"""MME: loading the official release (+ LLaVA's prompts) and calculation.py's acc / acc+ scores."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.benchmarks.builders import MME_FOLDERED, MME_SUBTASKS, build_mme

PROMPT = "Is this existence picture 0001 red?\nAnswer the question using a single word or phrase."


@pytest.fixture
def mme_root(tmp_path):
    return build_mme(tmp_path / "MME")


def test_load_mme(mme_root):
    samples = load_benchmark("mme", mme_root)
    assert len(samples) == 2 * (len(MME_SUBTASKS) + 1)  # two questions per image; existence has two images
    first = samples[0]
    assert first.id == "existence/0001.png#0" and first.question == PROMPT and first.answer == "yes"
    assert first.meta == {"subtask": "existence", "image_key": "existence/0001.png"}
    release = mme_root / "MME_Benchmark_release_version"
    assert first.image_path == release / "existence" / "0001.png"
    artwork = next(s for s in samples if s.meta["subtask"] == "artwork")
    assert "artwork" in MME_FOLDERED and artwork.image_path == release / "artwork" / "images" / "0001.jpg"
    assert [s.answer for s in samples[:4]] == ["yes", "no", "yes", "no"]


def test_mme_without_llava_file_builds_the_same_prompts(mme_root, tmp_path):
    with_file = load_benchmark("mme", mme_root)
    without = load_benchmark("mme", build_mme(tmp_path / "bare", with_llava_questions=False))
    assert [(s.id, s.question, s.answer) for s in without] == [
        (s.id, s.question, s.answer) for s in with_file
    ]


def test_mme_limit_keeps_both_questions_of_an_image(mme_root):
    assert [s.id for s in load_benchmark("mme", mme_root, limit=3)] == [
        "existence/0001.png#0", "existence/0001.png#1", "existence/0002.png#0", "existence/0002.png#1",
    ]  # fmt: skip


def test_mme_scores(mme_root):
    samples = load_benchmark("mme", mme_root)
    predictions = {s.id: "Yes" if s.answer == "yes" else "No" for s in samples}  # all right ...
    predictions.update(
        {
            "existence/0002.png#1": "Yes",  # ... but one question of existence's 2nd image wrong
            "count/0001.png#1": "Yes",  # one of count's two questions wrong
            "code_reasoning/0001.png#0": "I don't know",  # unparseable -> "other" -> wrong
            "code_reasoning/0001.png#1": "I don't know",
            "numerical_calculation/0001.png#0": "Yes.",  # parsed as yes: right
            "numerical_calculation/0001.png#1": "No, it is not.",  # parsed as no: right
            "text_translation/0001.png#0": "No",  # wrong
        }
    )
    result = score_benchmark("mme", samples, predictions)
    json.dumps(result)
    existence = result["subtasks"]["existence"]
    # existence: 3 of 4 questions right -> acc 75; 1 of 2 images fully right -> acc+ 50: naive acc != acc+.
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == (75.0, 50.0, 125.0)
    # count: 1 of 2 right -> acc 50, its only image not fully right -> acc+ 0 -> score 50.
    assert result["subtasks"]["count"]["score"] == 50.0
    # perception: 125 (existence) + 50 (count) + 8 subtasks * (100 + 100) = 1775.
    assert result["perception"] == 1775.0
    # cognition: code_reasoning 0 + commonsense 200 + numerical 200 + text_translation (50 + 0) = 450.
    assert result["subtasks"]["code_reasoning"]["score"] == 0.0
    assert result["subtasks"]["text_translation"]["score"] == 50.0
    assert result["cognition"] == 450.0 and result["total"] == 2225.0
    assert result["subtasks_not_scored"] == []
    # code_reasoning has no yes/no answer at all: calculation.py stops there; the formula's 0 comes with a note.
    assert len(result["notes"]) == 1 and result["notes"][0].startswith("code_reasoning: no answer reads as yes or no")


def test_mme_subtask_without_a_yes_or_no_answer(mme_root):
    samples = load_benchmark("mme", mme_root)
    predictions = {s.id: "Yes" if s.answer == "yes" else "No" for s in samples}
    predictions.update({"OCR/0001.png#0": "I cannot tell", "OCR/0001.png#1": "Maybe"})  # both 'other'
    result = score_benchmark("mme", samples, predictions)
    # calculation.py stops in compute_metric (sklearn on no yes/no answers); acc 0 + acc+ 0 = 0.
    assert result["subtasks"]["OCR"]["score"] == 0.0 and result["subtasks"]["OCR"]["num_other"] == 2
    assert result["notes"] == ["OCR: no answer reads as yes or no; calculation.py stops in compute_metric "
                               "(sklearn on empty lists), the formula gives score 0"]
    # The other 9 perception subtasks are all right: 9 * 200.
    assert result["perception"] == 1800.0 and result["cognition"] == 800.0
