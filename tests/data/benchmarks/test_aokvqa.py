"""A-OKVQA: allenai/aokvqa's layout and evaluation/eval_predictions.py's exact-match metrics.

Expectations were worked out by hand from `eval_aokvqa` (strict=False, as its command line runs it).
"""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from shortlvlm.data.errors import BenchmarkDataError
from tests.data.benchmarks.builders import build_aokvqa

CAB, UMBRELLA, BLUE = "22MexNkBPpdZGX6sxbxVBH", "2Bg3YkQyzGQeNhtjGNfq4C", "3Yx1dFcX7W7w6Q5m4Zb8Vh"


@pytest.fixture
def aokvqa_dir(tmp_path):
    return build_aokvqa(tmp_path / "datasets")


def test_official_layout_reads_unchanged(aokvqa_dir, tmp_path):
    assert aokvqa_dir == tmp_path / "datasets" / "aokvqa"
    samples = load_benchmark("aokvqa", aokvqa_dir)
    # The difficult question gets no direct-answer sample (the official DA setting leaves it out).
    assert [s.id for s in samples] == [f"{CAB}/mc", f"{CAB}/da", f"{UMBRELLA}/mc", f"{BLUE}/mc", f"{BLUE}/da"]
    mc, da = samples[0], samples[1]
    assert mc.question == (
        "What is in picture 0?\nA. skateboarder\nB. train\nC. delivery\nD. cab\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert mc.answer == "D"
    assert da.question == "What is in picture 0?\nAnswer the question using a single word or phrase."
    assert isinstance(da.answer, list) and len(da.answer) == 10
    image = tmp_path / "datasets" / "coco" / "val2017" / "000000299207.jpg"
    assert mc.image_path == image == da.image_path


def test_images_inside_the_data_folder_are_accepted(aokvqa_dir):
    (aokvqa_dir.parent / "coco").rename(aokvqa_dir / "coco")
    assert load_benchmark("aokvqa", aokvqa_dir)[0].image_path == aokvqa_dir / "coco" / "val2017" / "000000299207.jpg"


def test_wrong_layout_names_the_expected_path(aokvqa_dir, tmp_path):
    (aokvqa_dir.parent / "coco").rename(tmp_path / "elsewhere")
    with pytest.raises(BenchmarkDataError) as caught:
        load_benchmark("aokvqa", aokvqa_dir)
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "datasets" / "coco" / "val2017") in message
    with pytest.raises(BenchmarkDataError, match=r"missing benchmark file: .*datasets/aokvqa_v1p0_val\.json"):
        load_benchmark("aokvqa", tmp_path / "datasets")  # --data one folder too high


def test_aokvqa_metrics(aokvqa_dir):
    samples = load_benchmark("aokvqa", aokvqa_dir)
    predictions = {
        f"{CAB}/mc": "D",  # the letter becomes "cab" = choices[3]: right
        f"{UMBRELLA}/mc": "umbrella",  # the choice text itself: right
        f"{BLUE}/mc": "B.",  # passed on as "B.", which is no choice: wrong
        f"{CAB}/da": "cab",  # 6 of the 10 answers are exactly "cab": min(1, 6/3) = 1
        f"{BLUE}/da": "Blue",  # no exact match ("blue" x8): 0
    }
    result = score_benchmark("aokvqa", samples, predictions)
    json.dumps(result)
    assert result["mc_accuracy"] == pytest.approx(200 / 3)  # 2 of 3
    assert result["da_accuracy"] == 50.0  # (1 + 0) / 2
    assert result["num_da_questions"] == 2 and result["parser"] == "official"
    # The lenient reader takes "B." as B and normalises "Blue" to "blue": 3 of 3 and (1 + 1) / 2.
    lenient = score_benchmark("aokvqa", samples, predictions, lenient=True)
    assert (lenient["mc_accuracy"], lenient["da_accuracy"]) == (100.0, 100.0)


def test_aokvqa_case_counts_in_direct_answers(aokvqa_dir):
    samples = load_benchmark("aokvqa", aokvqa_dir)
    # "Cab" matches none of ["cab" x6, "taxi" x3, "bus"]; "taxi" matches 3 -> 1; a missing answer is 0.
    assert score_benchmark("aokvqa", samples, {f"{CAB}/da": "Cab"})["da_accuracy"] == 0.0
    assert score_benchmark("aokvqa", samples, {f"{CAB}/da": "taxi"})["da_accuracy"] == 50.0
    assert score_benchmark("aokvqa", samples, {f"{CAB}/mc": "cab"})["mc_accuracy"] == pytest.approx(100 / 3)
    assert score_benchmark("aokvqa", samples, {f"{CAB}/mc": "Cab"})["mc_accuracy"] == 0.0
