"""SEED-Bench-IMG: LLaVA's llava-seed-bench.jsonl + SEED-Bench.json, image dimensions 1-9 only."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.benchmarks.builders import build_seed


@pytest.fixture
def seed_root(tmp_path):
    return build_seed(tmp_path / "seed_bench")


def test_load_seed_skips_video_dimensions(seed_root):
    samples = load_benchmark("seed-img", seed_root)
    assert [s.id for s in samples] == ["101669", "101670", "1"]  # "v1738" is dimension 10 (video)
    first = samples[0]
    assert first.question == (
        "What about 101669?\nA. choice a of 101669\nB. choice b of 101669\nC. choice c of 101669\n"
        "D. choice d of 101669\nAnswer with the option's letter from the given choices directly."
    )
    assert first.answer == "A" and first.meta["dimension"] == "Instances Counting"
    assert first.image_path == seed_root / "SEED-Bench-image" / "1454426_2591111986.jpg"


def test_seed_without_llava_file_uses_data_id(seed_root, tmp_path):
    bare = load_benchmark("seed-img", build_seed(tmp_path / "bare", with_llava_questions=False))
    full = load_benchmark("seed-img", seed_root)
    assert [(s.id, s.question, s.answer, s.image_path.name) for s in bare] == [
        (s.id, s.question, s.answer, s.image_path.name) for s in full
    ]


def test_seed_accuracy_per_dimension(seed_root):
    samples = load_benchmark("seed-img", seed_root)
    result = score_benchmark("seed-img", samples, {"101669": "A", "101670": "B", "1": "D"})
    json.dumps(result)
    # Counting: 1 of 2 right -> 50; Scene Understanding: 1 of 1 -> 100; overall 2 of 3.
    assert result["dimensions"] == {"Instances Counting": 50.0, "Scene Understanding": 100.0}
    assert result["accuracy"] == pytest.approx(200 / 3) and result["notes"] == []


def test_seed_needs_the_exact_letter_as_convert_seed_for_submission(seed_root):
    samples = load_benchmark("seed-img", seed_root)
    assert samples[1].meta["choices"][2] == "Four" and samples[1].answer == "C"
    # "four" (the choice's text, lower-cased) and "D." are not the letter: only 101669 is right.
    predictions = {"101669": "A", "101670": "four", "1": "D."}
    result = score_benchmark("seed-img", samples, predictions)
    assert result["accuracy"] == pytest.approx(100 / 3)
    # Scene Understanding was answered and none right: convert_seed_for_submission.py's KeyError.
    assert result["dimensions"]["Scene Understanding"] == 0.0
    assert len(result["notes"]) == 1 and result["notes"][0].startswith("Scene Understanding: no question right")
    lenient = score_benchmark("seed-img", samples, predictions, lenient=True)
    assert lenient["accuracy"] == 100.0 and lenient["notes"] == []


def test_seed_missing_answer_is_wrong_without_a_crash_note(seed_root):
    samples = load_benchmark("seed-img", seed_root)
    # "1" unanswered: the script sets its type's count to 0 and does not crash; accuracy 2 of 3.
    result = score_benchmark("seed-img", samples, {"101669": "A", "101670": "C"})
    assert result["accuracy"] == pytest.approx(200 / 3) and result["notes"] == []
