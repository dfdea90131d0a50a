"""ScienceQA-IMG: LLaVA's llava_test_CQM-A.json prompts, image questions only, accuracy."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.builders import IMAGE_SIZE, build_scienceqa


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
