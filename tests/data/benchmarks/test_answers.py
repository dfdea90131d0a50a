"""Answer parsing: option letters, POPE and MME yes/no rules, VQA normalisation."""

from __future__ import annotations

import pytest

from shortlvlm.data.benchmarks.answers import choice_letter, mme_yes_no, normalize_vqa_answer, pope_yes_no
from shortlvlm.data.benchmarks.prompts import multiple_choice_prompt, short_answer_prompt


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
        ("The answer is D.", "D"),
        ("Answer: (C)", "C"),
        ("The correct option is A because it is red.", "A"),
        ("I would pick (D) here", "D"),
        ("dog", "B"),  # the option's text instead of its letter
        ("E", None),  # not one of the four options
        ("A cat is sitting on the mat", None),  # "A" is an article here
        ("I am not sure", None),
        ("", None),
    ],
)
def test_choice_letter(text, expected):
    assert choice_letter(text, 4, ["cat", "dog", "horse", "cow"]) == expected


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
        ("", "yes"),
    ],
)
def test_pope_yes_no_follows_llava_rule(text, expected):
    assert pope_yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes.", "yes"),
        ("No, it is not.", "no"),
        ("I don't know", "other"),
        ("", "other"),
    ],
)
def test_mme_yes_no_follows_calculation_py(text, expected):
    assert mme_yes_no(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Dog.", "dog"),
        ("an apple", "apple"),
        ("Two", "2"),
        ("t-shirt", "t shirt"),
        ("2.5", "2.5"),
        ("  Red!", "red"),
    ],
)
def test_normalize_vqa_answer(text, expected):
    assert normalize_vqa_answer(text) == expected


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
