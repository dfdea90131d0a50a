"""MMBench: one prompt per released TSV row, circular accuracy as OpenCompass tools/eval_mmbench.py.

Expected numbers were worked out by hand from eval_mmbench.py (`can_infer_option`, `can_infer_text`,
`eval_sub_data`, `eval_result`) with no judge model (VLMEvalKit's exact_matching policy).
"""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from shortlvlm.data.errors import BenchmarkDataError
from tests.data.benchmarks.builders import IMAGE_SIZE, build_mmbench, mmbench_rows

ROW_IDS = [str(row[0]) for row in mmbench_rows()]

# One answer per row. Comments: what eval_mmbench.py reads, and the row's answer letter.
PREDICTIONS = {
    # question 0: every row right -> hit
    "0": "C purple",  # one bare letter token "C" -> C (answer C); the old parser read nothing here
    "1000000": "B",  # B (B)
    "2000000": "A",  # a lone "A" is a letter when the answer has <= 3 tokens -> A (A)
    "3000000": "D.",  # no bare letter; wrapping "D." -> D (D)
    # question 1: the copy 2000001 says "c": no letter token, no option text inside -> unreadable.
    # Upstream a GPT judge would be asked; without one the question fails (judge_would_decide = 1).
    "1": "B",
    "1000001": "A",
    "2000001": "c",
    # question 2 (yes / no): "yes" contains only option A's text -> A (A); "B" -> B (B) -> hit
    "2": "yes",
    "1000002": "The answer is B",
    # question 3, fixed last option: three rows, all right -> hit
    "3": "B",
    "1000003": "A",
    "2000003": "C",
    # question 4: 2000004 reads as B but the answer is C -> miss, decided without a judge
    "4": "A",
    "1000004": "D",
    "2000004": "B",
    "3000004": "",
    # question 5: "A" among more than 3 tokens may be an article, so the letter rule skips it and
    # the text rule finds option C ("top") alone in the answer -> C (C); "(A)" -> A (A) -> hit
    "5": "A shape at the top",
    "1000005": "B",
    "2000005": "(A)",
    "3000005": "D",
}


@pytest.fixture
def mmbench_root(tmp_path):
    return build_mmbench(tmp_path / "mmbench")


def test_one_prompt_per_released_row_no_rotation(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root)
    assert [s.id for s in samples] == ROW_IDS  # 20 rows: 20 prompts, none rotated again
    first = samples[0]
    assert first.question == (
        "The picture was taken indoors.\nWhat is the main colour?\nA. red\nB. green\nC. purple\nD. yellow\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert first.meta["group"] == 0 and first.answer == "C"
    copy = next(s for s in samples if s.id == "1000000")
    assert copy.meta["group"] == 0 and copy.answer == "B"
    assert "A. green\nB. purple\nC. yellow\nD. red\n" in copy.question  # as released
    # The fixed last option stays D in the question and both of its copies (three rows, not four).
    fixed = [s for s in samples if s.meta["group"] == 3]
    assert [s.id for s in fixed] == ["3", "1000003", "2000003"]
    assert all("\nD. None of the above\nAnswer" in s.question for s in fixed)
    assert fixed[1].question.startswith("Which animal is left of the tree?\nA. dog\nB. bird\nC. cat\n")
    # Empty and "nan" hints are left out; a 3-option question has no "D." line.
    assert samples[1].question.startswith("How many objects are there?\nA. one\nB. two\nC. three\nAnswer")
    assert samples[2].question.startswith("Is the image bright?\nA. yes")
    assert first.image_path is None and first.load_image().size == IMAGE_SIZE


def test_limit_counts_questions_with_their_copies(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root, limit=2)
    assert [s.id for s in samples] == ["0", "1", "1000000", "1000001", "2000000", "2000001", "3000000"]


def test_circular_accuracy_as_eval_mmbench(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root)
    result = score_benchmark("mmbench", samples, PREDICTIONS)
    json.dumps(result)
    # Questions 0, 2, 3, 5 hit; 1 (unreadable "c") and 4 (a wrong copy) miss: 4 / 6.
    assert result["circular_accuracy"] == pytest.approx(400 / 6)
    assert result["num_questions"] == 6 and result["num_samples"] == 20 and result["parser"] == "official"
    # The first rows alone are all right ("yes" -> A, "A shape at the top" -> C): 6 / 6.
    assert result["vanilla_accuracy"] == 100.0
    assert result["judge_would_decide"] == 1
    assert any("GPT judge" in note for note in result["notes"])
    # attribute_recognition: questions 0 (hit), 1, 4 (misses) -> 1/3; spatial: 3 and 5 hit.
    assert result["categories"] == {
        "attribute_recognition": pytest.approx(100 / 3), "image_quality": 100.0, "spatial_relationship": 100.0,
    }  # fmt: skip
    assert result["l2_categories"]["coarse_perception"] == 100.0


def test_letter_variants_follow_the_official_rule_not_a_lenient_one(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root, limit=1)  # question 0: rows 0, 1e6, 2e6, 3e6
    right = {"0": "C", "1000000": "B", "2000000": "A", "3000000": "D"}

    def circular(first_answer: str, *, lenient: bool = False) -> float:
        answers = {**right, "0": first_answer}
        return score_benchmark("mmbench", samples, answers, lenient=lenient)["circular_accuracy"]

    assert circular("C purple") == 100.0  # bare letter token
    assert circular("purple") == 100.0  # only option C's text occurs in the answer
    assert circular("(C).") == 100.0  # wrapping "(C)."
    assert circular("c") == 0.0  # lower case is no letter, and no option text occurs in "c"
    assert circular("C or D") == 0.0  # two letter tokens: unreadable
    assert circular("E") == 0.0  # E is read (num_choice=5) and is wrong
    assert circular("A red one, not C") == 0.0  # two letter tokens; no wrapping; only "red" occurs -> A: wrong
    lenient = score_benchmark("mmbench", samples, {**right, "0": "c"}, lenient=True)
    assert lenient["circular_accuracy"] == 100.0 and lenient["parser"] == "lenient"


def test_tsv_without_copy_rows_is_single_pass(tmp_path):
    samples = load_benchmark("mmbench", build_mmbench(tmp_path / "mmbench", with_copies=False))
    assert [s.id for s in samples] == ["0", "1", "2", "3", "4", "5"]
    result = score_benchmark("mmbench", samples, PREDICTIONS)
    # Each group is one row, so circular = single pass = 6 / 6, and the result says why.
    assert result["circular_accuracy"] == result["vanilla_accuracy"] == 100.0
    assert any("no circular copies" in note for note in result["notes"])


def test_copies_without_their_question_are_not_asked(mmbench_root):
    path = mmbench_root / "mmbench_dev_20230712.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if not line.startswith("2\t")) + "\n")
    ids = [s.id for s in load_benchmark("mmbench", mmbench_root)]
    assert "2" not in ids and "1000002" not in ids and len(ids) == 18


def test_test_split_without_answers_is_refused(mmbench_root):
    path = mmbench_root / "mmbench_dev_20230712.tsv"
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    keep = [i for i, name in enumerate(header) if name != "answer"]
    path.write_text("\n".join("\t".join(line.split("\t")[i] for i in keep) for line in lines) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"no 'answer' column.*MMBench evaluation server"):
        load_benchmark("mmbench", mmbench_root)
