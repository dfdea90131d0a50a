"""A-OKVQA: multiple-choice accuracy and direct-answer soft accuracy as the official evaluator."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from tests.data.builders import build_aokvqa


@pytest.fixture
def aokvqa_root(tmp_path):
    return build_aokvqa(tmp_path / "aokvqa")


def test_load_aokvqa(aokvqa_root):
    samples = load_benchmark("aokvqa", aokvqa_root)
    # The difficult question gets no direct-answer sample (the official DA setting leaves it out).
    assert [s.id for s in samples] == [
        "22MexNkBPpdZGX6sxbxVBH/mc", "22MexNkBPpdZGX6sxbxVBH/da", "2Bg3YkQyzGQeNhtjGNfq4C/mc",
        "3Yx1dFcX7W7w6Q5m4Zb8Vh/mc", "3Yx1dFcX7W7w6Q5m4Zb8Vh/da",
    ]  # fmt: skip
    mc, da = samples[0], samples[1]
    assert mc.question == (
        "What is in picture 0?\nA. cat\nB. dog\nC. horse\nD. cow\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert mc.answer == "B"
    assert da.question == "What is in picture 0?\nAnswer the question using a single word or phrase."
    assert isinstance(da.answer, list) and len(da.answer) == 10
    assert mc.image_path == aokvqa_root / "val2017" / "000000299207.jpg" == da.image_path


def test_aokvqa_metrics(aokvqa_root):
    samples = load_benchmark("aokvqa", aokvqa_root)
    predictions = {
        "22MexNkBPpdZGX6sxbxVBH/mc": "B",  # right
        "2Bg3YkQyzGQeNhtjGNfq4C/mc": "C. umbrella",  # right
        "3Yx1dFcX7W7w6Q5m4Zb8Vh/mc": "D",  # wrong (B)
        "22MexNkBPpdZGX6sxbxVBH/da": "A dog.",  # "dog" matches "the dog" and "dog": min(1, 2/3)
        "3Yx1dFcX7W7w6Q5m4Zb8Vh/da": "red",  # no match: 0
    }
    result = score_benchmark("aokvqa", samples, predictions)
    json.dumps(result)
    assert result["mc_accuracy"] == pytest.approx(200 / 3)  # 2 of 3
    assert result["da_accuracy"] == pytest.approx(100 * (2 / 3 + 0) / 2)  # 33.3
    assert result["num_da_questions"] == 2
    assert score_benchmark("aokvqa", samples, {"3Yx1dFcX7W7w6Q5m4Zb8Vh/da": "Blue"})["da_accuracy"] == 50.0
