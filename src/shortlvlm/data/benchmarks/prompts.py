"""Prompt formatting in the style of LLaVA-1.5's evaluation scripts (docs/Evaluation.md)."""

from __future__ import annotations

import string
from collections.abc import Sequence

SHORT_ANSWER = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
OPTION_LETTERS = string.ascii_uppercase


def with_instruction(text: str, instruction: str) -> str:
    """`text` then `instruction` on its own line, unless the file's text already ends with it."""
    text = text.strip()
    return text if text.endswith(instruction) else f"{text}\n{instruction}"


def short_answer_prompt(question: str) -> str:
    """A yes/no or short-answer question: '<question>\\nAnswer the question using a single word or phrase.'"""
    return with_instruction(question, SHORT_ANSWER)


def multiple_choice_prompt(question: str, options: Sequence[str], hint: str | None = None) -> str:
    """'[hint\\n]question\\nA. ...\\nB. ...\\nAnswer with the option's letter from the given choices directly.'"""
    lines = [hint, question] if hint else [question]
    lines += [f"{letter}. {option}" for letter, option in zip(OPTION_LETTERS, options, strict=False)]
    lines.append(MULTIPLE_CHOICE)
    return "\n".join(lines)
