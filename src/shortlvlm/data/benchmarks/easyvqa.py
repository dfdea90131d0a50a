"""easy-VQA (Zhou, 2019; MIT): 64x64 images of one shape, 13 answers; the test split as released.

The released data is the `data/` folder of the `easy-vqa` package (`pip install easy-vqa`; when it
is installed and `--data` is not given, that folder is used; it is located, not imported). The
dataset's own evaluation is classification accuracy over its 13 answers (answers.txt): a question
is right when the predicted answer is the label. A generating model's answer is read the way the
VQA evaluator reads answers (lower-cased, punctuation and articles removed); it is right only when
it is exactly the label, so an answer outside the 13 is wrong. `--lenient` reads its first word
instead ("Yes, it is." counts as "yes").
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

from shortlvlm.data.benchmarks.base import BenchSample, existing_image, percent, read_json, require_file
from shortlvlm.data.benchmarks.lenient import normalize_vqa_answer
from shortlvlm.data.benchmarks.prompts import short_answer_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "easy-vqa"
NEEDS_DATA = True
HEADLINE = ("accuracy",)
QUESTIONS = "test/questions.json"
ANSWERS = "answers.txt"
LAYOUT = """\
  answers.txt               the 13 answers, one per line
  test/questions.json       [[question, answer, image_id], ...]
  test/images/<image_id>.png
  (the `data` folder of the easy-vqa package; used by default when the package is installed)"""
SHAPES = ("circle", "rectangle", "triangle")


def default_root() -> Path | None:
    """The installed easy-vqa package's data folder (found without importing the package), or None."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def question_type(answer: str) -> str:
    """yes/no, shape or color: the three kinds of question the generator asks, told by their answer."""
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "color"


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """The test questions in file order; a question's id is its position in questions.json."""
    answers_path = require_file(root, ANSWERS, LAYOUT)
    answers = {line.strip() for line in answers_path.read_text().splitlines() if line.strip()}
    questions_path = require_file(root, QUESTIONS, LAYOUT)
    records = read_json(questions_path)
    if not isinstance(records, list):
        raise BenchmarkDataError(f"{questions_path}: expected a list of [question, answer, image_id]\n"
                                 f"{LAYOUT}")
    samples = []
    for number, record in enumerate(records):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{questions_path}, entry {number}"
        if not (isinstance(record, list) and [type(value) for value in record] == [str, str, int]):
            raise BenchmarkDataError(f"{where}: expected [question, answer, image_id], got {record!r}")
        question, answer, image_id = record
        if answer not in answers:
            raise BenchmarkDataError(f"{where}: answer {answer!r} is not one of the answers in "
                                     f"{answers_path}")
        samples.append(BenchSample(
            id=str(number),
            image_path=existing_image(root, f"{image_id}.png", base="test/images", source=where,
                                      layout=LAYOUT),
            question=short_answer_prompt(question),
            answer=answer,
            meta={"type": question_type(answer), "image_id": image_id},
        ))
    return samples


def read_answer(text: str, *, lenient: bool = False) -> str:
    """The answer as the VQA evaluator normalises it; lenient: only its first word."""
    answer = normalize_vqa_answer(text)
    return answer.split()[0] if lenient and answer else answer


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """Accuracy (percent) overall and per question type; a missing answer is wrong."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for sample in samples:
        right = read_answer(predictions.get(sample.id, ""), lenient=lenient) == sample.answer
        hits[sample.meta["type"]].append(right)
    every = [h for values in hits.values() for h in values]
    return {
        "accuracy": percent(sum(every), len(every)),
        "num_questions": len(every),
        "types": {name: percent(sum(hits[name]), len(hits[name])) for name in ("yes/no", "shape", "color")
                  if hits[name]},
    }
