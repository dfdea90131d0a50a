"""ScienceQA-IMG: the image questions of LLaVA's llava_test_CQM-A.json, answers from problems.json."""

from __future__ import annotations

from pathlib import Path

from shortlvlm.data.benchmarks import lenient as lenient_readers
from shortlvlm.data.benchmarks.answers import scienceqa_choice_index, scienceqa_letter
from shortlvlm.data.benchmarks.base import (
    BenchSample,
    existing_image,
    field_of,
    percent,
    read_json,
    require_file,
)
from shortlvlm.data.benchmarks.prompts import MULTIPLE_CHOICE, OPTION_LETTERS, with_instruction
from shortlvlm.data.errors import BenchmarkDataError

NAME = "scienceqa-img"
NEEDS_DATA = True
HEADLINE = ("accuracy",)  # the number the paper reports (a path into the metrics)
QUESTIONS = "llava_test_CQM-A.json"
PROBLEMS = "problems.json"
IMAGES = "images/test"
LAYOUT = """\
  llava_test_CQM-A.json     [{"id", "image": "<id>/image.png", "conversations": [{"from": "human", "value"}, ...]}]
  problems.json             {"<id>": {"question", "choices", "answer": <index>, "image", "subject", ...}}
  pid_splits.json           (not needed: llava_test_CQM-A.json already is the test split)
  images/test/<id>/image.png"""


def _prompt(entry: dict, where: str) -> str:
    conversations = field_of(entry, "conversations", where)
    if not isinstance(conversations, list) or not conversations or not isinstance(conversations[0], dict):
        raise BenchmarkDataError(f"{where}: 'conversations' must be a non-empty list of messages")
    text = str(field_of(conversations[0], "value", f"{where}, conversations[0]"))
    # As model_vqa_science.py with --single-pred-prompt: the file's text (context, question, options) + instruction.
    return with_instruction(text.replace("<image>", "").strip(), MULTIPLE_CHOICE)


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """Test questions that have an image, prompted with the text the LLaVA file gives."""
    questions_path = require_file(root, QUESTIONS, LAYOUT)
    problems_path = require_file(root, PROBLEMS, LAYOUT)
    entries, problems = read_json(questions_path), read_json(problems_path)
    if not isinstance(entries, list) or not isinstance(problems, dict):
        raise BenchmarkDataError(f"{questions_path} must hold a JSON list and {problems_path} a JSON object")
    samples = []
    for number, entry in enumerate(entries):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{questions_path}, entry {number}"
        if not isinstance(entry, dict) or "image" not in entry:
            continue  # a text-only question: not part of ScienceQA-IMG
        problem_id = str(field_of(entry, "id", where))
        problem = problems.get(problem_id)
        if not isinstance(problem, dict):
            raise BenchmarkDataError(f"{where}: problem id {problem_id!r} not found in {problems_path}")
        choices = [str(c) for c in field_of(problem, "choices", f"{problems_path}, problem {problem_id}")]
        answer = field_of(problem, "answer", f"{problems_path}, problem {problem_id}")
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise BenchmarkDataError(
                f"{problems_path}, problem {problem_id}: answer {answer!r} is not a choice index"
            )
        samples.append(
            BenchSample(
                id=problem_id,
                image_path=existing_image(root, entry["image"], base=IMAGES, source=where, layout=LAYOUT),
                question=_prompt(entry, where),
                answer=OPTION_LETTERS[answer],
                meta={"choices": choices, "subject": problem.get("subject"), "grade": problem.get("grade")},
            )
        )
    return samples


def _parsed_index(prediction: str, choices: list[str], lenient: bool) -> int:
    if lenient:
        letter = lenient_readers.choice_letter(prediction, len(choices), choices)
        return OPTION_LETTERS.index(letter) if letter else -1
    return scienceqa_choice_index(scienceqa_letter(prediction), len(choices))


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """IMG-Accuracy (percent) as LLaVA's llava/eval/eval_science_qa.py prints it.

    A question is right when the parsed letter's index equals the problem's answer. The script
    counts a question as multimodal by '<image>' in the answer's prompt; a question with no answer
    gets the prompt 'Unknown', so it drops out of IMG-Accuracy's denominator: so it does here.
    """
    answered = [s for s in samples if s.id in predictions]
    right = [_parsed_index(predictions[s.id], s.meta["choices"], lenient) == OPTION_LETTERS.index(s.answer)
             for s in answered]
    notes = []
    if len(answered) < len(samples):
        notes.append(f"{len(samples) - len(answered)} image question(s) have no answer; eval_science_qa.py "
                     "leaves them out of IMG-Accuracy (its prompt 'Unknown' has no '<image>')")
    return {
        "accuracy": percent(sum(right), len(right)),
        "num_correct": sum(right),
        "num_questions": len(right),
        "notes": notes,
    }
