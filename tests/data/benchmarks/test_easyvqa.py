"""easy-VQA: the released test split (answers.txt, test/questions.json, test/images), exact-answer accuracy."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import easyvqa, load_benchmark, score_benchmark
from shortlvlm.data.errors import BenchmarkDataError
from tests.data.benchmarks.builders import EASY_VQA_QUESTIONS, build_easy_vqa


def test_load_reads_the_released_layout(tmp_path):
    root = build_easy_vqa(tmp_path / "data")
    samples = load_benchmark("easy-vqa", root)
    assert [s.id for s in samples] == ["0", "1", "2", "3", "4"]  # position in questions.json
    first = samples[0]
    assert first.question == "what is the red shape?\nAnswer the question using a single word or phrase."
    assert first.answer == "triangle" and first.image_path == root / "test" / "images" / "0.png"
    assert [s.meta["type"] for s in samples] == ["shape", "color", "yes/no", "yes/no", "color"]
    assert [s.id for s in load_benchmark("easy-vqa", root, limit=2)] == ["0", "1"]


def test_accuracy_needs_the_exact_answer_and_lenient_reads_the_first_word(tmp_path):
    samples = load_benchmark("easy-vqa", build_easy_vqa(tmp_path / "data"))
    predictions = {"0": "Triangle.", "1": "red color", "2": "No, it does not.", "3": "yes"}  # "4" missing
    result = score_benchmark("easy-vqa", samples, predictions)
    json.dumps(result)
    # right: "Triangle." (case and full stop are normalised away) and "yes"; "red color" and the sentence are not
    # one of the 13 answers; a missing answer is wrong.
    assert result["accuracy"] == pytest.approx(40.0) and result["num_missing"] == 1
    assert result["types"] == {"yes/no": 50.0, "shape": 100.0, "color": 0.0}
    lenient = score_benchmark("easy-vqa", samples, predictions, lenient=True)
    assert lenient["accuracy"] == pytest.approx(80.0) and lenient["parser"] == "lenient"


@pytest.mark.parametrize(("entry", "message"), [
    (["what is it?", "square", 0], "answer 'square' is not one of the answers"),
    (["what is it?", "circle"], r"expected \[question, answer, image_id\]"),
    (["what is it?", "circle", "0"], r"expected \[question, answer, image_id\]"),
    (["what is it?", "circle", 7], "image not found"),
])
def test_bad_entries_are_named_with_their_position(tmp_path, entry, message):
    root = build_easy_vqa(tmp_path / "data", questions=[*EASY_VQA_QUESTIONS, entry])
    with pytest.raises(BenchmarkDataError, match=rf"questions\.json, entry 5: .*{message}"):
        load_benchmark("easy-vqa", root)


def test_without_data_the_installed_package_is_used_or_named(monkeypatch):
    root = easyvqa.default_root()
    if root is None:  # dev installs ship it (pyproject's dev extra); without it the error says how to get it
        with pytest.raises(BenchmarkDataError, match="pip install easy-vqa"):
            load_benchmark("easy-vqa")
        return
    samples = load_benchmark("easy-vqa")
    released = json.loads((root / "test" / "questions.json").read_text())
    assert len(samples) == len(released) == 9673  # the test split's size in the dataset's README
    assert samples[0].answer == released[0][1] and samples[0].image_path == root / "test" / "images" / "0.png"
    monkeypatch.setattr(easyvqa, "default_root", lambda: None)
    with pytest.raises(BenchmarkDataError, match="pip install easy-vqa"):
        load_benchmark("easy-vqa")
