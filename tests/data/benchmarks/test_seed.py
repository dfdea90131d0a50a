"""SEED-Bench-IMG: LLaVA's llava-seed-bench.jsonl + SEED-Bench.json, image dimensions 1-9 only."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.builders import build_seed


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
    result = score_benchmark("seed-img", samples, {"101669": "A", "101670": "B", "1": "D."})
    json.dumps(result)
    # Counting: 1 of 2 right -> 50; Scene Understanding: 1 of 1 -> 100; overall 2 of 3.
    assert result["dimensions"] == {"Instances Counting": 50.0, "Scene Understanding": 100.0}
    assert result["accuracy"] == pytest.approx(200 / 3)
