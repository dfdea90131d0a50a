"""POPE (object hallucination, yes/no) in LLaVA-1.5's layout; metrics as llava/eval/eval_pope.py."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from shortlvlm.data.benchmarks import lenient as lenient_readers
from shortlvlm.data.benchmarks.answers import pope_yes_no
from shortlvlm.data.benchmarks.base import (
    BenchSample,
    existing_image,
    field_of,
    percent,
    read_jsonl,
    require_file,
)
from shortlvlm.data.benchmarks.prompts import short_answer_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "pope"
NEEDS_DATA = True
HEADLINE = ("mean", "f1")  # the number the paper reports (a path into the metrics)
QUESTIONS = "llava_pope_test.jsonl"
LAYOUT = """\
  llava_pope_test.jsonl                 {"question_id", "image", "text", "category"} per line
  coco/coco_pope_adversarial.json       {"question_id", "image", "text", "label": "yes"|"no"} per line
  coco/coco_pope_popular.json
  coco/coco_pope_random.json
  val2014/COCO_val2014_000000xxxxxx.jpg"""


def _labels_file(category: str) -> str:
    return f"coco/coco_pope_{category}.json"


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """POPE questions, each paired with its label by position within its category (as eval_pope.py does)."""
    questions_path = require_file(root, QUESTIONS, LAYOUT)
    labels: dict[str, list[tuple[int, dict]]] = {}
    seen: Counter[str] = Counter()
    samples = []
    for lineno, record in read_jsonl(questions_path):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{questions_path}, line {lineno}"
        category = str(field_of(record, "category", where))
        if category not in labels:
            labels[category] = read_jsonl(require_file(root, _labels_file(category), LAYOUT))
        position, seen[category] = seen[category], seen[category] + 1
        if position >= len(labels[category]):
            raise BenchmarkDataError(
                f"{where}: category {category!r} has more questions than labels in {root / _labels_file(category)}"
            )
        label_line, label = labels[category][position]
        label_where = f"{root / _labels_file(category)}, line {label_line}"
        image = field_of(record, "image", where)
        if label.get("image", image) != image:
            raise BenchmarkDataError(
                f"{where}: image {image!r} does not match {label['image']!r} at {label_where}; "
                f"the questions and label files must list each category in the same order"
            )
        answer = field_of(label, "label", label_where)
        # eval_pope.py reads any label other than exactly 'no' as yes; the released files hold only these two.
        if answer not in ("yes", "no"):
            raise BenchmarkDataError(f"{label_where}: label must be 'yes' or 'no', got {answer!r}")
        samples.append(
            BenchSample(
                id=str(field_of(record, "question_id", where)),
                image_path=existing_image(root, image, base="val2014", source=where, layout=LAYOUT),
                question=short_answer_prompt(str(field_of(record, "text", where))),
                answer=answer,
                meta={"category": category},
            )
        )
    return samples


def _confusion_metrics(pairs: list[tuple[str, str]], category: str, notes: list[str]) -> dict[str, float | int]:
    """eval_pope.py `eval_pope` for one category, in percent.

    Where eval_pope.py divides by zero (no "yes" answers: precision; no "yes" labels: recall; no
    true positive: F1), the rate is 0, the value of TP / (TP + FP), TP / (TP + FN) and
    2TP / (2TP + FP + FN) as TP reaches 0, and `notes` says which.
    """
    tp = sum(pred == "yes" and gold == "yes" for pred, gold in pairs)
    fp = sum(pred == "yes" and gold == "no" for pred, gold in pairs)
    tn = sum(pred == "no" and gold == "no" for pred, gold in pairs)
    fn = sum(pred == "no" and gold == "yes" for pred, gold in pairs)
    precision, recall = percent(tp, tp + fp), percent(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    undefined = [name for name, zero in (("precision", tp + fp == 0), ("recall", tp + fn == 0),
                                         ("F1", tp == 0)) if zero]
    if undefined:
        notes.append(f"{category}: eval_pope.py stops with ZeroDivisionError here (TP={tp}, FP={fp}, FN={fn}); "
                     f"{', '.join(undefined)} reported as 0")
    return {
        "accuracy": percent(tp + tn, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": percent(tp + fp, len(pairs)),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "num_questions": len(pairs),
    }  # fmt: skip


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio (percent) per category, and their mean over categories."""
    read = lenient_readers.pope_yes_no if lenient else pope_yes_no
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for sample in samples:
        # A missing answer reads as "" (yes); eval_pope.py pairs answers with labels by position and has no gap.
        pairs[sample.meta["category"]].append((read(predictions.get(sample.id, "")), str(sample.answer)))
    notes: list[str] = []
    categories = {category: _confusion_metrics(pairs[category], category, notes) for category in sorted(pairs)}
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    mean = (
        {key: sum(c[key] for c in categories.values()) / len(categories) for key in keys}
        if categories
        else {}
    )
    return {"categories": categories, "mean": mean, "notes": notes}
