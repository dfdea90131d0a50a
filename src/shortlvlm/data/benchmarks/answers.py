"""Reading a model's answer exactly as each benchmark's official script does (the default parsers).

Each function restates one upstream rule in our own code; the docstring names the file and
function it follows. The generation loop strips answers (`eval/generate.py`), as LLaVA's answer
scripts do (`model_vqa_loader.py`, `model_vqa_science.py`, `model_vqa_mmbench.py` all `.strip()`
the decoded text), so the rules below see the same text the official scripts see.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# OpenCompass tools/eval_mmbench.py `can_infer_option(answer, num_choice=5)`: letters A-E are looked
# for (E can be read even though MMBench has at most four options; it is then simply wrong).
_MMBENCH_LETTERS = "ABCDE"
# The same function's wrappings, tried in this order when no bare letter decides: "C." "C," "C:"
# "C)" "C)." "(C)" "(C)." ":C" ":C," ":C." ":C)" ":C).".
_MMBENCH_WRAPPINGS = (
    ("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
    (":", ""), (":", ","), (":", "."), (":", ")"), (":", ")."),
)  # fmt: skip
_API_FAILURE = "Failed to obtain answer via API"

# LLaVA llava/eval/eval_science_qa.py: `args.options` and `re.compile(r'The answer is ([A-Z]).')`.
SCIENCEQA_OPTIONS = ("A", "B", "C", "D", "E")
_SCIENCEQA_STATED = re.compile(r"The answer is ([A-Z]).")
SCIENCEQA_FAILED = "FAILED"


def mmbench_letter(answer: str, options: Mapping[str, str]) -> str | None:
    """The letter MMBench's evaluator reads without a judge model, or None when a judge would be asked.

    OpenCompass tools/eval_mmbench.py `can_infer` (ported unchanged to lmms-eval's
    tasks/mmbench/mmbench_evals.py `MMBench_Evaluator.can_infer`): first `can_infer_option` (a
    whitespace-separated token that is exactly one of A-E, unless "A" is a token of an answer with
    more than 3 tokens, where it may be an article; then one letter in one of the wrappings above),
    then `can_infer_text` (exactly one option whose lower-cased text occurs in the lower-cased
    answer). `options` maps the row's letters A-D to their texts.
    """
    if _API_FAILURE in answer:
        return None
    tokens = answer.split()
    bare = [letter for letter in _MMBENCH_LETTERS if letter in tokens]
    if len(bare) == 1 and not ("A" in tokens and len(tokens) > 3):
        return bare[0]
    for prefix, suffix in _MMBENCH_WRAPPINGS:
        wrapped = [letter for letter in _MMBENCH_LETTERS if f"{prefix}{letter}{suffix}" in tokens]
        if len(wrapped) == 1:
            return wrapped[0]
    lowered = answer.lower()
    containing = [letter for letter, text in options.items() if str(text).lower() in lowered]
    return containing[0] if len(containing) == 1 else None


# lmms-eval lmms_eval/tasks/_task_utils/mcq_extract.py `extract_mcq_answer` (commit 7a69a9a12f, the
# newest touching it; unchanged at 75571cfe0f), used by tasks/mmbench/mmbench_evals.py
# `MMBench_Evaluator.eval_sub_data(static_only=True)` (commit d0c1eae757, "MMBench static evaluation
# mode") for the rows `can_infer` cannot read. Restated here from reading that code.
_LMMS_EVAL_EDGE_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'", '"')  # stripped once each, in this order
# Answer phrases, matched in the lower-cased answer at their first occurrence.
_LMMS_EVAL_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip
# A letter inside a wrapping, its rank (higher wins) and the wrapping: "(C)" 6, "C." 5, "C:" 4, "C)" 3,
# "C " 2. A letter that starts the answer ranks 10, one that ends it 9, one after a phrase 7.
_LMMS_EVAL_WRAPPED = ((6, "(", ")"), (5, "", "."), (4, "", ":"), (3, "", ")"), (2, "", " "))


def lmms_eval_mcq_letter(answer: str, letters: str) -> str | None:
    """The letter lmms-eval's offline MMBench evaluator extracts from an answer, or None.

    lmms-eval `extract_mcq_answer(response, choices=letters)`: the stripped answer loses edge
    punctuation and is padded with a space each side; candidates are every letter of `letters`
    (upper case only, no word boundaries) found wrapped as "(C)", "C.", "C:", "C)" or "C " (its last
    occurrence), after an answer phrase such as "the answer is" (its first occurrence after the
    phrase), or starting / ending the answer with no letter beside it. The highest rank wins, then
    the later position. With no candidate at all, any occurrence of a letter counts (the last one
    wins): "Answer: b" reads as A, from "Answer". An answer with none of the letters reads as None.
    """
    text = answer.strip()
    if not text:
        return None
    for mark in _LMMS_EVAL_EDGE_PUNCTUATION:
        text = text.strip(mark)
    text = f" {text} "
    found: list[tuple[int, int, str]] = []  # (rank, position, letter)
    for rank, prefix, suffix in _LMMS_EVAL_WRAPPED:
        found += [(rank, text.rfind(f"{prefix}{c}{suffix}"), c) for c in letters if f"{prefix}{c}{suffix}" in text]
    lowered = text.lower()
    for phrase in _LMMS_EVAL_PHRASES:
        start = lowered.find(phrase)
        if start != -1:
            after = start + len(phrase)
            found += [(7, text.find(c, after), c) for c in letters if text.find(c, after) != -1]
    core = text.strip()
    for c in letters:
        if core.startswith(c) and (len(core) == 1 or not core[1].isalpha()):
            found.append((10, 0, c))
        if core.endswith(c) and (len(core) == 1 or not core[-2].isalpha()):
            found.append((9, len(text) - 1, c))
    if not found:
        found = [(0, text.rfind(c), c) for c in letters if c in text]
    # No two letters share a rank and position, so the maximum names one letter.
    return max(found)[2] if found else None


def scienceqa_letter(answer: str) -> str:
    """The letter eval_science_qa.py parses from an answer, or "FAILED".

    LLaVA llava/eval/eval_science_qa.py, `__main__`: the whole answer is one of A-E; or it starts
    with a letter of A-E followed by ". "; or `The answer is ([A-Z]).` matches exactly once.
    "B.", "(B)", "B)", "b" and "Answer: B" are all FAILED.
    """
    if answer in SCIENCEQA_OPTIONS:
        return answer
    if len(answer) >= 3 and answer[0] in SCIENCEQA_OPTIONS and answer[1:3] == ". ":
        return answer[0]
    stated = _SCIENCEQA_STATED.findall(answer)
    return stated[0] if len(stated) == 1 else SCIENCEQA_FAILED


def scienceqa_choice_index(letter: str, num_choices: int) -> int:
    """eval_science_qa.py `get_pred_idx`: the letter's index if it names one of the choices, else -1."""
    valid = SCIENCEQA_OPTIONS[:num_choices]
    return valid.index(letter) if letter in valid else -1


def pope_yes_no(answer: str) -> str:
    """LLaVA llava/eval/eval_pope.py `eval_pope`: in the text before the first '.', commas removed and
    split on single spaces, a word 'No', 'no' or 'not' means no; anything else means yes.

    Only ' ' separates words there, so "No\\tthere is none" or "No\\nThere is none" has no word
    "No" and reads as yes.
    """
    first_sentence = answer.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def mme_yes_no(answer: str) -> str:
    """MME eval_tool/calculation.py `parse_pred_ans`: 'yes'/'no' exactly, else whichever of them the
    first 4 characters hold, else 'other'.

    calculation.py lower-cases the answer field of LLaVA's convert_answer_to_mme.py lines, which
    still ends in the line's newline; that newline never creates or removes a 'yes'/'no' in the
    first four characters, so the stripped answer reads the same.
    """
    answer = answer.strip().lower()
    if answer in ("yes", "no"):
        return answer
    head = answer[:4]
    if "yes" in head:
        return "yes"
    return "no" if "no" in head else "other"


def seed_is_correct(answer: str, correct_letter: str) -> bool:
    """LLaVA scripts/convert_seed_for_submission.py `eval_single`: `row['text'] == question_data['answer']`."""
    return answer == correct_letter


def aokvqa_choice_text(answer: str, choices: Sequence[str], letters: str) -> str:
    """The multiple-choice prediction written for eval_predictions.py, which expects a choice's text.

    Our prompt asks for the option's letter (LLaVA-1.5 style); an answer that is exactly one of the
    shown letters becomes that choice's text, any other answer is passed on unchanged (so an exact
    choice text also counts). This conversion is ours: allenai/aokvqa has no letter prompt.
    """
    shown = letters[: len(choices)]
    return choices[shown.index(answer)] if len(answer) == 1 and answer in shown else answer


def aokvqa_mc_correct(prediction: str, choices: Sequence[str], correct_index: int) -> bool:
    """allenai/aokvqa evaluation/eval_predictions.py `eval_aokvqa` (multiple choice): `pred == choices[idx]`."""
    return prediction == choices[correct_index]


def aokvqa_da_score(prediction: str, direct_answers: Sequence[str]) -> float:
    """eval_predictions.py `eval_aokvqa` (direct answer): min(1, exact matches among the 10 answers / 3)."""
    return min(1.0, sum(prediction == answer for answer in direct_answers) / 3.0)
