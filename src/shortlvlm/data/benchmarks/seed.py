"""SEED-Bench-IMG: the image questions (data_type "image", dimensions 1-9) of SEED-Bench-1, in LLaVA-1.5's layout."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from shortlvlm.data.benchmarks import lenient as lenient_readers
from shortlvlm.data.benchmarks.answers import seed_is_correct
from shortlvlm.data.benchmarks.base import (
    BenchSample,
    existing_image,
    field_of,
    percent,
    read_json,
    read_jsonl,
    require_file,
)
from shortlvlm.data.benchmarks.prompts import MULTIPLE_CHOICE, multiple_choice_prompt, with_instruction
from shortlvlm.data.errors import BenchmarkDataError

NAME = "seed-img"
NEEDS_DATA = True
HEADLINE = ("accuracy",)  # the number the paper reports (a path into the metrics)
ANNOTATIONS = "SEED-Bench.json"
QUESTIONS = "llava-seed-bench.jsonl"
IMAGES = "SEED-Bench-image"
CHOICE_FIELDS = ("choice_a", "choice_b", "choice_c", "choice_d")
LAYOUT = """\
  SEED-Bench.json             {"questions": [{"question_id", "question", "choice_a".."choice_d", "answer",
                               "data_id", "data_type", "question_type_id"}], "question_type": {name: id}}
  llava-seed-bench.jsonl      optional: LLaVA's prompts {"question_id", "image", "text", "category"}
  SEED-Bench-image/<data_id>  (a '.jpg' or '.png' suffix is tried when data_id has none)"""


def _type_id(question: dict, where: str) -> int:
    value = field_of(question, "question_type_id", where)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BenchmarkDataError(f"{where}: question_type_id must be an integer, got {value!r}") from None


def _annotations(path: Path) -> tuple[dict[str, dict], set[str], dict[int, str]]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise BenchmarkDataError(
            f"{path}: expected an object with a 'questions' list\nExpected layout:\n{LAYOUT}"
        )
    names = {i: str(name) for name, i in (data.get("question_type") or {}).items() if isinstance(i, int)}
    image_questions, all_ids = {}, set()
    for number, question in enumerate(data["questions"]):
        where = f"{path}, questions[{number}]"
        question_id = str(field_of(question, "question_id", where))
        all_ids.add(question_id)
        # convert_seed_for_submission.py `eval_single(..., eval_only_type='image')` keeps data_type == 'image'.
        if field_of(question, "data_type", where) == "image":
            _type_id(question, where)
            if field_of(question, "answer", where) not in ("A", "B", "C", "D"):
                raise BenchmarkDataError(f"{where}: answer must be one of A-D, got {question['answer']!r}")
            image_questions[question_id] = question
    return image_questions, all_ids, names


def _sample(
    root: Path, question: dict, prompt: str, image: object, where: str, names: dict[int, str]
) -> BenchSample:
    type_id = int(question["question_type_id"])
    choices = [str(field_of(question, key, where)) for key in CHOICE_FIELDS]
    return BenchSample(
        id=str(question["question_id"]),
        image_path=existing_image(root, image, source=where, layout=LAYOUT, suffixes=(".jpg", ".png")),
        question=prompt,
        answer=question["answer"],
        meta={"question_type_id": type_id, "dimension": names.get(type_id, str(type_id)), "choices": choices},
    )


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """Image-dimension questions; prompts and image paths from llava-seed-bench.jsonl when present."""
    annotations_path = require_file(root, ANNOTATIONS, LAYOUT)
    image_questions, all_ids, names = _annotations(annotations_path)
    samples = []
    if (root / QUESTIONS).is_file():
        for lineno, record in read_jsonl(root / QUESTIONS):
            if limit is not None and len(samples) >= limit:
                break
            where = f"{root / QUESTIONS}, line {lineno}"
            question_id = str(field_of(record, "question_id", where))
            if question_id not in all_ids:
                raise BenchmarkDataError(f"{where}: question_id {question_id!r} is not in {annotations_path}")
            if question_id in image_questions:  # video questions (dimensions 10-12) are skipped
                prompt = with_instruction(str(field_of(record, "text", where)), MULTIPLE_CHOICE)
                question = image_questions[question_id]
                samples.append(
                    _sample(root, question, prompt, field_of(record, "image", where), where, names)
                )
        return samples
    for question_id, question in image_questions.items():
        if limit is not None and len(samples) >= limit:
            break
        where = f"{annotations_path}, question {question_id}"
        choices = [str(field_of(question, key, where)) for key in CHOICE_FIELDS]
        prompt = multiple_choice_prompt(str(field_of(question, "question", where)), choices)
        image = f"{IMAGES}/{field_of(question, 'data_id', where)}"
        samples.append(_sample(root, question, prompt, image, where, names))
    return samples


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """Image accuracy (percent) over all image questions, and per dimension.

    LLaVA scripts/convert_seed_for_submission.py `eval_single(eval_only_type='image')`: an answer
    is right only if it is exactly the answer letter; a missing answer is wrong. The script raises
    KeyError for a dimension where every question was answered and none right; there the formula's
    0 is reported with a note.
    """
    per_dimension: dict[str, list[bool]] = defaultdict(list)
    answered: dict[str, int] = defaultdict(int)
    for sample in samples:
        prediction = predictions.get(sample.id, "")
        if lenient:
            right = lenient_readers.choice_letter(prediction, 4, sample.meta["choices"]) == sample.answer
        else:
            right = seed_is_correct(prediction, sample.answer)
        per_dimension[sample.meta["dimension"]].append(right)
        answered[sample.meta["dimension"]] += sample.id in predictions
    right = [r for values in per_dimension.values() for r in values]
    notes = [
        f"{name}: no question right; convert_seed_for_submission.py stops with KeyError here, the formula gives 0"
        for name, values in sorted(per_dimension.items())
        if not any(values) and answered[name] == len(values)
    ]
    return {
        "accuracy": percent(sum(right), len(right)),
        "num_questions": len(right),
        "dimensions": {name: percent(sum(v), len(v)) for name, v in sorted(per_dimension.items())},
        "notes": notes,
    }
