"""A-OKVQA val in allenai/aokvqa's layout; metrics as its evaluation/eval_predictions.py.

`--data` is the folder the official scripts call AOKVQA_DIR (`datasets/aokvqa/`, holding
`aokvqa_v1p0_val.json`, as `load_aokvqa.py` reads it); the images are COCO_DIR's `val2017/` with
COCO_DIR = `datasets/coco/` beside it (the README's download steps; `get_coco_path`). A COCO folder
inside the data folder (`coco/val2017/` or `val2017/`) is also accepted.
"""

from __future__ import annotations

from pathlib import Path

from shortlvlm.data.benchmarks import lenient as lenient_readers
from shortlvlm.data.benchmarks.answers import aokvqa_choice_text, aokvqa_da_score, aokvqa_mc_correct
from shortlvlm.data.benchmarks.base import BenchSample, field_of, percent, read_json, require_file
from shortlvlm.data.benchmarks.prompts import OPTION_LETTERS, multiple_choice_prompt, short_answer_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "aokvqa"
NEEDS_DATA = True
HEADLINE = ("mc_accuracy",)  # the number the paper reports (a path into the metrics)
ANNOTATIONS = "aokvqa_v1p0_val.json"
LAYOUT = """\
  datasets/aokvqa/aokvqa_v1p0_val.json   --data is datasets/aokvqa (AOKVQA_DIR); [{"question_id", "image_id",
                                         "question", "choices", "correct_choice_idx", "direct_answers",
                                         "difficult_direct_answer", ...}]
  datasets/coco/val2017/000000xxxxxx.jpg COCO 2017 val images (COCO_DIR beside AOKVQA_DIR, as the
                                         allenai/aokvqa README downloads them)"""


def image_folder(root: Path) -> Path:
    """COCO val2017 for AOKVQA_DIR `root`: ../coco/val2017 (the README's layout), else coco/val2017 or
    val2017 inside."""
    candidates = (root.parent / "coco" / "val2017", root / "coco" / "val2017", root / "val2017")
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise BenchmarkDataError(
        f"A-OKVQA images not found: expected {candidates[0]}/<image_id:012d>.jpg (datasets/coco/val2017 "
        f"beside datasets/aokvqa, as allenai/aokvqa's README lays them out)"
    )


def _samples_for(images: Path, question: dict, where: str) -> list[BenchSample]:
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
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise BenchmarkDataError(f"{where}: image_id must be an integer, got {image_id!r}")
    image = images / f"{image_id:012d}.jpg"  # load_aokvqa.py get_coco_path
    if not image.is_file():
        raise BenchmarkDataError(f"{where}: image not found: {image}")
    samples = [
        BenchSample(
            id=f"{question_id}/mc",
            image_path=image,
            question=multiple_choice_prompt(text, choices),
            answer=OPTION_LETTERS[correct],
            meta={"task": "mc", "question_id": question_id, "choices": choices, "correct": correct},
        )
    ]
    # eval_predictions.py keeps only `difficult_direct_answer is False` questions in the DA setting.
    if field_of(question, "difficult_direct_answer", where) is False:
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
    images = image_folder(root)
    selected = questions if limit is None else questions[:limit]
    return [s for number, q in enumerate(selected) for s in _samples_for(images, q, f"{path}, entry {number}")]


def _mc_right(sample: BenchSample, prediction: str, lenient: bool) -> bool:
    choices = sample.meta["choices"]
    if lenient:
        return lenient_readers.choice_letter(prediction, len(choices), choices) == sample.answer
    return aokvqa_mc_correct(aokvqa_choice_text(prediction, choices, OPTION_LETTERS), choices, sample.meta["correct"])


def _da_score(prediction: str, direct_answers: list[str], lenient: bool) -> float:
    if lenient:
        normalized = lenient_readers.normalize_vqa_answer(prediction)
        matches = sum(normalized == lenient_readers.normalize_vqa_answer(answer) for answer in direct_answers)
        return min(1.0, matches / 3.0)
    return aokvqa_da_score(prediction, direct_answers)


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """Multiple-choice accuracy and direct-answer accuracy min(1, exact matches / 3), both in percent.

    eval_predictions.py `eval_aokvqa` with strict=False (its command line): a missing prediction
    scores 0; MC compares the prediction with the correct choice's text exactly (a letter answer is
    first turned into its choice's text, `aokvqa_choice_text`); DA counts exact matches, case and
    articles included.
    """
    mc = [s for s in samples if s.meta["task"] == "mc"]
    da = [s for s in samples if s.meta["task"] == "da"]
    mc_right = [s.id in predictions and _mc_right(s, predictions[s.id], lenient) for s in mc]
    da_scores = [_da_score(predictions[s.id], list(s.answer), lenient) if s.id in predictions else 0.0
                 for s in da]
    return {
        "mc_accuracy": percent(sum(mc_right), len(mc_right)),
        "da_accuracy": percent(sum(da_scores), len(da_scores)),
        "num_mc_questions": len(mc),
        "num_da_questions": len(da),
        "notes": [],
    }
