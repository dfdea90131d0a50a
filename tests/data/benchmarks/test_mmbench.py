"""MMBench: one prompt per released TSV row, circular accuracy as OpenCompass tools/eval_mmbench.py.

Expected numbers were worked out by hand from eval_mmbench.py (`can_infer_option`, `can_infer_text`,
`eval_sub_data`, `eval_result`) with no judge model (VLMEvalKit's exact_matching policy), and for
policy "lmms-eval" from lmms-eval's mmbench_evals.py `eval_sub_data(static_only=True)` (commit
d0c1eae757) with _task_utils/mcq_extract.py `extract_mcq_answer` (commit 7a69a9a12f).
"""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import check_scoring, load_benchmark, mmbench, score_benchmark
from shortlvlm.data.benchmarks.answers import mmbench_letter
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


# Answers MMBench's rules cannot read, for the two policies. Each row: what `can_infer` reads (None:
# unreadable), what lmms-eval's extraction then reads, and the row's answer.
UNREADABLE = {
    # question 0 (C, B, A, D): "The answer is A" has "A" among 4 tokens (maybe an article) and none of
    # purple/yellow/red/green -> None; extraction: A, ending the answer (right).
    # exact: miss. lmms-eval: hit.
    "0": "C", "1000000": "B", "2000000": "The answer is A", "3000000": "D",
    # question 1 (B, A, C; options two/three/one on row 1000001): "one" and "two" both occur -> None;
    # extraction finds no wrapped letter, so any letter counts: the "B" of "Both" (wrong, A).
    # exact: miss. lmms-eval: miss.
    "1": "B", "1000001": "Both one and two", "2000001": "C",
    # question 2 (A, B): lower case "a" is no letter and holds neither "yes" nor "no" -> None;
    # extraction reads upper case only -> nothing (wrong). exact: miss. lmms-eval: miss.
    "2": "a", "1000002": "B",
    # question 3 (B, A, C): "Not B but A" has two letter tokens and no option text -> None;
    # extraction: the ending "A" (right). exact: miss. lmms-eval: hit.
    "3": "B", "1000003": "Not B but A", "2000003": "C",
    # question 4 (A, D, C, B): both "The answer is A" rows are unreadable; extraction reads A for both,
    # right on row 4 and wrong on 2000004 (answer C): the circular rule fails the question.
    # exact: miss. lmms-eval: miss.
    "4": "The answer is A", "1000004": "D", "2000004": "The answer is A", "3000004": "B",
    # question 5 (C, B, A, D): "B) top" and "A) top" are read by the wrapping "X)" -> right under both.
    "5": "C", "1000005": "B) top", "2000005": "A) top", "3000005": "D",
}  # fmt: skip


def test_policies_differ_only_on_answers_the_rules_cannot_read(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root)
    exact = score_benchmark("mmbench", samples, UNREADABLE)
    extracted = score_benchmark("mmbench", samples, UNREADABLE, mmbench_policy="lmms-eval")
    # exact: only question 5 hits -> 1 / 6. lmms-eval: questions 0, 3 and 5 -> 3 / 6.
    assert exact["circular_accuracy"] == pytest.approx(100 / 6) and exact["mmbench_policy"] == "exact"
    assert extracted["circular_accuracy"] == 50.0 and extracted["mmbench_policy"] == "lmms-eval"
    assert exact["parser"] == extracted["parser"] == "official"
    # First rows alone: exact misses "a" and "The answer is A" (4 / 6); lmms-eval only "a" (5 / 6).
    assert exact["vanilla_accuracy"] == pytest.approx(400 / 6)
    assert extracted["vanilla_accuracy"] == pytest.approx(500 / 6)
    # Questions 0-4 each hold an unreadable row and no readable wrong one: a judge would decide all 5;
    # the count is the same under both, and the note says who decided them instead.
    assert exact["judge_would_decide"] == extracted["judge_would_decide"] == 5
    assert any("count as wrong" in note for note in exact["notes"])
    assert any("lmms-eval's offline extraction" in note for note in extracted["notes"])
    assert not any("count as wrong" in note for note in extracted["notes"])
    # attribute: questions 0, 1, 4; image quality: 2; spatial: 3, 5.
    assert exact["categories"] == {
        "attribute_recognition": 0.0, "image_quality": 0.0, "spatial_relationship": 50.0}  # fmt: skip
    assert extracted["categories"] == {
        "attribute_recognition": pytest.approx(100 / 3), "image_quality": 0.0,
        "spatial_relationship": 100.0}  # fmt: skip
    # Answers the rules read are scored alike: PREDICTIONS (one unreadable "c", which extraction
    # cannot read either, being lower case) gives 4 / 6 under both.
    assert score_benchmark("mmbench", samples, PREDICTIONS, mmbench_policy="lmms-eval")["circular_accuracy"] == (
        pytest.approx(400 / 6))


def test_circular_rule_holds_under_the_lmms_eval_policy(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root, limit=1)  # question 0: answers C, B, A, D

    def circular(answers: dict[str, str]) -> float:
        return score_benchmark("mmbench", samples, answers, mmbench_policy="lmms-eval")["circular_accuracy"]

    # Every row unreadable by the rules (two letter tokens, or "A" among more than 3 tokens, and no
    # option text); extraction reads each one's ending letter, the row's answer.
    right = {"0": "Not A but C", "1000000": "Not A but B", "2000000": "The answer is A", "3000000": "Not A but D"}
    assert all(mmbench_letter(right[s.id], s.meta["options"]) is None for s in samples)
    assert score_benchmark("mmbench", samples, right)["circular_accuracy"] == 0.0  # exact: all wrong
    assert circular(right) == 100.0
    # One copy extracted wrong (or not at all) fails the whole question.
    assert circular({**right, "3000000": "Not D but C"}) == 0.0
    assert circular({**right, "1000000": "maybe"}) == 0.0
    # A readable wrong row fails it too, whatever the extraction would read elsewhere.
    assert circular({**right, "1000000": "D"}) == 0.0


def test_bad_policy_is_refused_in_one_line(mmbench_root):
    samples = load_benchmark("mmbench", mmbench_root, limit=1)
    with pytest.raises(BenchmarkDataError, match=r"^unknown --mmbench-policy 'lmms'; choose one of: exact, "
                                                 r"lmms-eval$"):
        score_benchmark("mmbench", samples, PREDICTIONS, mmbench_policy="lmms")
    with pytest.raises(BenchmarkDataError, match=r"^unknown MMBench policy 'judge'; choose one of: exact, lmms-eval$"):
        mmbench.score(samples, PREDICTIONS, policy="judge")
    with pytest.raises(BenchmarkDataError, match=r"applies to --bench mmbench only; pope reads answers"):
        check_scoring("pope", mmbench_policy="lmms-eval")
    with pytest.raises(BenchmarkDataError, match=r"but --lenient replaces those rules altogether: give one"):
        score_benchmark("mmbench", samples, PREDICTIONS, lenient=True, mmbench_policy="lmms-eval")
    check_scoring("pope", mmbench_policy="exact")  # the default is fine anywhere
