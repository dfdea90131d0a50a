"""Reading a model's free-text answer the way each official evaluator does."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from shortlvlm.data.benchmarks.prompts import OPTION_LETTERS

# "B", "B.", "B)", "(B)", "[B]", "B. cat", "B: cat", "B\nbecause ..." -- but not "A cat" or "I think".
_LEADING_LETTER = re.compile(r"^[(\[]?([A-Z])(?:[)\]]|[.:,;](?=\s|$)|$|\n)")
# "The answer is B", "Answer: (C)", "the correct option is D".
_STATED_LETTER = re.compile(r"\b(?:[Aa]nswer|[Oo]ption|[Cc]hoice)(?:\s+is)?\s*:?\s*[(\[]?([A-Z])\b")
_PARENTHESISED_LETTER = re.compile(r"\(([A-Z])\)")

_ARTICLES = {"a", "an", "the"}
# The official VQA evaluator's number-word map.
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_PUNCTUATION_BUT_PERIOD = re.compile("[" + re.escape(string.punctuation.replace(".", "")) + "]")
_NON_DECIMAL_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")


def _simplify(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def choice_letter(text: str, num_choices: int, choices: Sequence[str] = ()) -> str | None:
    """The option letter a multiple-choice answer picks, or None when it picks none of the valid ones."""
    valid = OPTION_LETTERS[:num_choices]
    answer = text.strip()
    if len(answer) == 1 and answer.upper() in valid:
        return answer.upper()
    for pattern in (_LEADING_LETTER, _STATED_LETTER):
        match = pattern.search(answer)
        if match and match.group(1) in valid:
            return match.group(1)
    parenthesised = {letter for letter in _PARENTHESISED_LETTER.findall(answer) if letter in valid}
    if len(parenthesised) == 1:
        return parenthesised.pop()
    # The model answered with the option's text instead of its letter.
    same = [
        letter
        for letter, choice in zip(valid, choices, strict=False)
        if _simplify(choice) == _simplify(answer)
    ]
    return same[0] if len(same) == 1 else None


def pope_yes_no(text: str) -> str:
    """LLaVA's POPE rule: in the first sentence, a word 'no'/'No'/'not' means no; anything else means yes."""
    first_sentence = text.split(".")[0]
    words = first_sentence.replace(",", "").split()
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def mme_yes_no(text: str) -> str:
    """MME's calculation.py rule: 'yes'/'no' exactly, else whichever of them the first 4 characters hold."""
    answer = text.strip().lower()
    if answer in ("yes", "no"):
        return answer
    head = answer[:4]
    if "yes" in head:
        return "yes"
    return "no" if "no" in head else "other"


def normalize_vqa_answer(text: str) -> str:
    """VQA-style normalisation: lowercase, punctuation and articles removed, number words as digits."""
    answer = _NON_DECIMAL_PERIOD.sub("", text.lower())
    answer = _PUNCTUATION_BUT_PERIOD.sub(" ", answer)
    words = [_NUMBER_WORDS.get(word, word) for word in answer.split() if word not in _ARTICLES]
    return " ".join(words)
