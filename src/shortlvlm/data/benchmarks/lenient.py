"""The lenient answer readers behind `--lenient` (never the default; results say `"parser": "lenient"`).

They accept answer formats the official scripts reject ("B.", "(B)", "the answer is b", an option's
text, "The Dog." for "dog"), which is useful to see how much of a gap is formatting, but their
numbers are not comparable with published ones.
"""

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
# The VQA evaluator's number-word map.
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_PUNCTUATION_BUT_PERIOD = re.compile("[" + re.escape(string.punctuation.replace(".", "")) + "]")
_NON_DECIMAL_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")


def _simplify(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def choice_letter(text: str, num_choices: int, choices: Sequence[str] = ()) -> str | None:
    """The option letter a free-form answer most plausibly picks, or None (lenient: any case, wrappers, text)."""
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
    """eval_pope.py's rule with words split on any whitespace (so "No\\nThere is none" reads as no)."""
    words = text.split(".")[0].replace(",", "").split()
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def normalize_vqa_answer(text: str) -> str:
    """VQA-style normalisation: lowercase, punctuation and articles removed, number words as digits."""
    answer = _NON_DECIMAL_PERIOD.sub("", text.lower())
    answer = _PUNCTUATION_BUT_PERIOD.sub(" ", answer)
    words = [_NUMBER_WORDS.get(word, word) for word in answer.split() if word not in _ARTICLES]
    return " ".join(words)
