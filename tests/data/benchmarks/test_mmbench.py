"""MMBench: the dev TSV with base64 images, rotated options, and circular accuracy."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.builders import IMAGE_SIZE, MMBENCH_ROWS, build_mmbench


@pytest.fixture
def mmbench_root(tmp_path):
    return build_mmbench(tmp_path / "mmbench")


def test_load_mmbench_rotations(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root)
    assert [s.id for s in samples] == ["0/0", "0/1", "0/2", "0/3", "1/0", "1/1", "1/2", "2/0", "2/1"]
    assert samples[0].question == (
        "The picture was taken indoors.\nWhat is the main colour?\nA. red\nB. green\nC. blue\nD. yellow\n"
        "Answer with the option's letter from the given choices directly."
    )
    # Rotation r shows the options shifted left by r; the correct content moves with them.
    assert samples[1].meta["choices"] == ["green", "blue", "yellow", "red"]
    assert [s.answer for s in samples[:4]] == ["B", "A", "D", "C"]
    rows = {str(row[0]): row for row in MMBENCH_ROWS}
    for sample in samples:
        options, answer = rows[sample.meta["index"]][3], rows[sample.meta["index"]][4]
        assert sample.meta["choices"]["ABCD".index(sample.answer)] == options["ABCD".index(answer)]
        assert sample.meta["num_rotations"] == len(options)
    # Empty and "nan" hints are left out; a 3-option question has no "D." line.
    assert samples[4].question.startswith("How many objects are there?\nA. one\nB. two\nC. three\nAnswer")
    assert samples[7].question.startswith("Is the image bright?\nA. yes")
    assert samples[0].image_path is None and samples[0].load_image().size == IMAGE_SIZE
    assert len(load_benchmark("mmbench", mmbench_root, limit=1)) == 4  # one question, all its rotations


def test_mmbench_circular_accuracy(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root)
    predictions = {
        "0/0": "B", "0/1": "(A)", "0/2": "The answer is D", "0/3": "C. green",  # question 0: every rotation right
        "1/0": "C", "1/1": "C", "1/2": "A",  # question 1: rotation 1 wrong (answer is B there)
        "2/0": "B", "2/1": "B",  # question 2: rotation 0 wrong
    }  # fmt: skip
    result = score_benchmark("mmbench", samples, predictions)
    json.dumps(result)
    # Naive per-sample accuracy would be 7/9 = 77.8%; circular counts only question 0: 1/3.
    assert result["circular_accuracy"] == pytest.approx(100 / 3)
    # Vanilla (first rotation only): questions 0 and 1 right -> 2/3.
    assert result["vanilla_accuracy"] == pytest.approx(200 / 3)
    # attribute_recognition: questions 0 (right) and 1 (wrong) -> 50; image_quality: question 2 -> 0.
    assert result["categories"] == {"attribute_recognition": 50.0, "image_quality": 0.0}
    assert result["l2_categories"]["coarse_perception"] == 0.0
    assert result["num_questions"] == 3 and result["num_samples"] == 9
