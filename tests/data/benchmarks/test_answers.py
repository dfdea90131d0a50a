"""Answer parsing: each official script's rule (the default) and the lenient readers behind --lenient.

Every expectation was worked out by hand from the upstream function named in the test.
"""

from __future__ import annotations

import pytest

from shortlvlm.data.benchmarks import lenient
from shortlvlm.data.benchmarks.answers import (
    aokvqa_choice_text,
    aokvqa_da_score,
    lmms_eval_mcq_letter,
    mmbench_letter,
    mme_yes_no,
    pope_yes_no,
    scienceqa_choice_index,
    scienceqa_letter,
    seed_is_correct,
)
from shortlvlm.data.benchmarks.prompts import multiple_choice_prompt, short_answer_prompt

OPTIONS = {"A": "cat", "B": "dog", "C": "horse", "D": "cow"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("B dog", "B"),  # one bare letter token
        ("b", None),  # not a letter token; no option text occurs in "b"
        ("B.", "B"),  # wrapping ("", ".")
        ("(B)", "B"),  # wrapping ("(", ")")
        ("B)", "B"),
        ("Answer: B", "B"),  # "B" is a bare token
        ("answer:B", None),  # the token is "answer:B", not ":B"
        (":B", "B"),  # wrapping (":", "")
        ("The answer is B", "B"),
        ("A", "A"),
        ("A dog is here", "B"),  # "A" among > 3 tokens is skipped; "dog" is the only option text
        ("A B", None),  # two bare letters; no wrapping; no option text
        ("E", "E"),  # E is looked for (num_choice=5) even with four options
        ("dog", "B"),
        ("a dog or a cat", None),  # two option texts occur
        ("hotdog", "B"),  # substring, as can_infer_text tests `choice in answer`
        ("Failed to obtain answer via API", None),
        ("", None),
    ],
)
def test_mmbench_letter_follows_eval_mmbench_can_infer(text, expected):
    assert mmbench_letter(text, OPTIONS) == expected


@pytest.mark.parametrize(
    ("text", "letters", "expected"),
    [
        ("The answer is A", "ABCD", "A"),  # ends with "A" (rank 9); also after the phrase (7) and "A " (2)
        ("Not B but A", "ABCD", "A"),  # the ending "A" (9) outranks "B " (2)
        ("The answer is (B), not A", "ABCD", "A"),  # the ending "A" (9) outranks the phrase (7) and "(B)" (6)
        ("(B) dog, (A) cat", "ABCD", "A"),  # two "(X)" (6 each): the later one
        ("The answer is Cat, not Dog", "ABCD", "D"),  # after the phrase, "C" and "D" inside words: the later
        ('"C."', "ABCD", "C"),  # '.' then '"' stripped once each, in that order: 'C.' starts with C
        ("Answer: b", "ABCD", "A"),  # no candidate, so any letter counts: the "A" of "Answer"
        ("b", "ABCD", None),  # upper case only
        ("D", "ABC", None),  # D is not one of the row's letters
        ("  ", "ABCD", None),
    ],
)
def test_lmms_eval_mcq_letter_follows_extract_mcq_answer(text, letters, expected):
    assert lmms_eval_mcq_letter(text, letters) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("B. dog", "B"),  # letter + ". "
        ("B.", "FAILED"),
        ("(B)", "FAILED"),
        ("B)", "FAILED"),
        ("Answer: B", "FAILED"),
        ("b", "FAILED"),
        ("The answer is B.", "B"),
        ("The answer is B", "FAILED"),  # the pattern needs one more character after the letter
        ("The answer is B. The answer is C.", "FAILED"),  # two matches
        ("F", "FAILED"),  # not in A-E
        ("The answer is F.", "F"),  # parsed, then get_pred_idx gives -1
    ],
)
def test_scienceqa_letter_follows_eval_science_qa(text, expected):
    assert scienceqa_letter(text) == expected


def test_scienceqa_choice_index_is_get_pred_idx():
    assert scienceqa_choice_index("B", 2) == 1
    assert scienceqa_choice_index("E", 2) == -1 and scienceqa_choice_index("F", 5) == -1
    assert scienceqa_choice_index("FAILED", 5) == -1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("no", "no"),
        ("Yes, there is a dog.", "yes"),
        ("No, there is no dog in the image.", "no"),
        ("There is not a dog.", "no"),
        ("Yes. There is no cat though.", "yes"),  # only the first sentence counts
        ("Nothing like that", "yes"),  # "Nothing" is not the word "no"
        ("No\tthere is none", "yes"),  # split(' '): the word is "No\tthere"
        ("No\nThere isn't one", "yes"),  # the word is "No\nThere"
        ("No\nthere is no dog", "no"),  # ... but "no" is a word later in the sentence
        ("", "yes"),
    ],
)
def test_pope_yes_no_follows_eval_pope(text, expected):
    assert pope_yes_no(text) == expected


def test_lenient_pope_splits_on_any_whitespace():
    assert lenient.pope_yes_no("No\tthere is none") == "no" and lenient.pope_yes_no("No\nThere isn't") == "no"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes.", "yes"),
        ("No, it is not.", "no"),
        ("Nothing", "no"),  # "noth" holds "no"
        ("Not sure", "no"),
        ("I don't know", "other"),
        ("The answer is yes", "other"),  # only the first four characters count
        ("", "other"),
    ],
)
def test_mme_yes_no_follows_calculation_py(text, expected):
    assert mme_yes_no(text) == expected


def test_seed_needs_the_exact_letter():
    assert seed_is_correct("C", "C")
    assert not any(seed_is_correct(text, "C") for text in ("C.", "c", "(C)", "C Four", "Four", "four", " C"))


def test_aokvqa_rules():
    choices = ["skateboarder", "train", "delivery", "cab"]
    assert aokvqa_choice_text("D", choices, "ABCD") == "cab"
    assert aokvqa_choice_text("D.", choices, "ABCD") == "D."  # passed on: not the choice text
    assert aokvqa_choice_text("cab", choices, "ABCD") == "cab"
    assert aokvqa_choice_text("E", choices, "ABCDE") == "E"  # not a shown letter
    answers = ["cab"] * 2 + ["taxi"] * 8
    assert aokvqa_da_score("cab", answers) == pytest.approx(2 / 3)
    assert aokvqa_da_score("Cab", answers) == 0.0  # exact match: case counts
    assert aokvqa_da_score("taxi", answers) == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("B. cat", "B"),
        ("B: cat", "B"),
        ("  C\n", "C"),
        ("b", "B"),
        ("The answer is B", "B"),
        ("Answer: (C)", "C"),
        ("I would pick (D) here", "D"),
        ("dog", "B"),  # the option's text instead of its letter
        ("E", None),  # not one of the four options
        ("A cat is sitting on the mat", None),  # "A" is an article here
        ("", None),
    ],
)
def test_lenient_choice_letter(text, expected):
    assert lenient.choice_letter(text, 4, ["cat", "dog", "horse", "cow"]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("The Dog.", "dog"), ("an apple", "apple"), ("Two", "2"), ("t-shirt", "t shirt"), ("2.5", "2.5")],
)
def test_lenient_normalize_vqa_answer(text, expected):
    assert lenient.normalize_vqa_answer(text) == expected


def test_prompt_formats_match_llava_eval_scripts():
    assert short_answer_prompt("Is there a dog?") == (
        "Is there a dog?\nAnswer the question using a single word or phrase."
    )
    assert short_answer_prompt(short_answer_prompt("Is there a dog?")) == short_answer_prompt(
        "Is there a dog?"
    )
    assert multiple_choice_prompt("Which?", ["x", "y"], hint="Hint.") == (
        "Hint.\nWhich?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."
    )
