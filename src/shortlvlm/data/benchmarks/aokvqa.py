"""A-OKVQA val: multiple choice and direct answer; metrics as allenai/aokvqa evaluation/eval_predictions.py."""

from __future__ import annotations

from pathlib import Path

from shortlvlm.data.benchmarks.answers import choice_letter, normalize_vqa_answer
from shortlvlm.data.benchmarks.base import (
    BenchSample,
    existing_image,
    field_of,
    percent,
    read_json,
    require_file,
)
from shortlvlm.data.benchmarks.prompts import OPTION_LETTERS, multiple_choice_prompt, short_answer_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "aokvqa"
NEEDS_DATA = True
HEADLINE = ("mc_accuracy",)  # the number the paper reports (a path into the metrics)
ANNOTATIONS = "aokvqa_v1p0_val.json"
IMAGE_FOLDERS = ("val2017", "coco/val2017")
LAYOUT = """\
  aokvqa_v1p0_val.json      [{"question_id", "image_id", "question", "choices", "correct_choice_idx",
                              "direct_answers", "difficult_direct_answer", ...}]
  val2017/000000xxxxxx.jpg  COCO 2017 val images (or coco/val2017/; a symlink to your COCO copy is fine)"""


def _image_base(root: Path) -> str:
    return next((folder for folder in IMAGE_FOLDERS if (root / folder).is_dir()), IMAGE_FOLDERS[0])


def _samples_for(root: Path, base: str, question: dict, where: str) -> list[BenchSample]:
    question_id = str(field_of(question, "question_id", where))
    text = str(field_of(question, "question", where))
    choices = [str(c) for c in field_of(question, "choices", where)]
    correct = field_of(question, "correct_choice_idx", where)
    direct_answers = field_of(question, "direct_answers", where)
    if not isinstance(correct, int) or not 0 <= correct < len(choices):
        raise BenchmarkDataError(f"{where}: correct_choice_idx {correct!r} is not an index into choices")
    if not isinstance(direct_answers, list) or not direct_answers:
        raise BenchmarkDataError(f"{where}: direct_answers must be a non-empty list")
    image_id = field_of(question, "image_id", where)
    if not isinstance(image_id, int):
        raise BenchmarkDataError(f"{where}: image_id must be an integer, got {image_id!r}")
    image = existing_image(root, f"{image_id:012d}.jpg", base=base, source=where, layout=LAYOUT)
    samples = [
        BenchSample(
            id=f"{question_id}/mc",
            image_path=image,
            question=multiple_choice_prompt(text, choices),
            answer=OPTION_LETTERS[correct],
            meta={"task": "mc", "question_id": question_id, "choices": choices},
        )
    ]
    # The official evaluator leaves questions with noisy direct answers out of the DA setting.
    if not question.get("difficult_direct_answer", False):
        samples.append(
            BenchSample(
                id=f"{question_id}/da",
                image_path=image,
                question=short_answer_prompt(text),
                answer=[str(a) for a in direct_answers],
                meta={"task": "da", "question_id": question_id},
            )
        )
    return samples


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """Per question a multiple-choice sample ('<id>/mc') and, unless difficult, a direct-answer one ('<id>/da')."""
    path = require_file(root, ANNOTATIONS, LAYOUT)
    questions = read_json(path)
    if not isinstance(questions, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of questions\nExpected layout:\n{LAYOUT}")
    base = _image_base(root)
    selected = questions if limit is None else questions[:limit]
    return [
        s for number, q in enumerate(selected) for s in _samples_for(root, base, q, f"{path}, entry {number}")
    ]


def _direct_answer_accuracy(prediction: str, direct_answers: list[str]) -> float:
    normalized = normalize_vqa_answer(prediction)
    matches = sum(normalized == normalize_vqa_answer(answer) for answer in direct_answers)
    return min(1.0, matches / 3.0)


def score(samples: list[BenchSample], predictions: dict[str, str]) -> dict:
    """Multiple-choice accuracy and direct-answer soft accuracy min(1, #matches / 3), both in percent."""
    mc = [s for s in samples if s.meta["task"] == "mc"]
    da = [s for s in samples if s.meta["task"] == "da"]
    mc_right = [
        choice_letter(predictions.get(s.id, ""), len(s.meta["choices"]), s.meta["choices"]) == s.answer
        for s in mc
    ]
    da_scores = [_direct_answer_accuracy(predictions.get(s.id, ""), list(s.answer)) for s in da]
    return {
        "mc_accuracy": percent(sum(mc_right), len(mc_right)),
        "da_accuracy": percent(sum(da_scores), len(da_scores)),
        "num_mc_questions": len(mc),
        "num_da_questions": len(da),
    }
