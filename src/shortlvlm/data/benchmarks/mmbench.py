"""MMBench dev (TSV with base64 images) with circular evaluation, prompted as LLaVA's model_vqa_mmbench.py."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from shortlvlm.data.benchmarks.answers import choice_letter
from shortlvlm.data.benchmarks.base import BenchSample, percent, require_file
from shortlvlm.data.benchmarks.prompts import OPTION_LETTERS, multiple_choice_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "mmbench"
NEEDS_DATA = True
HEADLINE = ("circular_accuracy",)  # the number the paper reports (a path into the metrics)
TSV = "mmbench_dev_20230712.tsv"
REQUIRED_COLUMNS = ("index", "question", "A", "B", "answer", "image")
LAYOUT = """\
  mmbench_dev_20230712.tsv   tab-separated, header: index question hint A B C D answer category image
                             source l2-category comment split (image = base64-encoded)"""
# Base64 images make single TSV fields far larger than the csv module's default 128 KiB limit.
_FIELD_SIZE_LIMIT = 2**31 - 1


def _is_missing(value: str | None) -> bool:
    # pandas (which LLaVA reads the TSV with) turns empty cells into NaN; LLaVA's is_none also drops "nan"/"none".
    return value is None or value.strip() == "" or value.strip().lower() in ("nan", "none")


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_SIZE_LIMIT))
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BenchmarkDataError(f"{path}: header lacks columns {missing}\nExpected:\n{LAYOUT}")
            return [(reader.line_num, row) for row in reader]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BenchmarkDataError(f"{path}: not a readable UTF-8 TSV file: {exc}") from None


def _options(row: dict[str, str]) -> list[str]:
    options = []
    for letter in OPTION_LETTERS:
        if letter not in row or _is_missing(row[letter]):
            break
        options.append(row[letter].strip())
    return options


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """Every rotation of every question's options as its own sample (ids '<index>/<rotation>')."""
    path = require_file(root, TSV, LAYOUT)
    samples = []
    for question_number, (lineno, row) in enumerate(_read_rows(path)):
        if limit is not None and question_number >= limit:
            break
        where = f"{path}, row ending on line {lineno}"
        options = _options(row)
        answer = (row.get("answer") or "").strip()
        if len(options) < 2 or answer not in OPTION_LETTERS[: len(options)]:
            raise BenchmarkDataError(
                f"{where}: needs options A, B, ... and an answer among them, got {answer!r}"
            )
        empty = [column for column in ("index", "question", "image") if _is_missing(row.get(column))]
        if empty:
            raise BenchmarkDataError(f"{where}: empty field(s) {empty}")
        hint = None if _is_missing(row.get("hint")) else row["hint"].strip()
        index, correct = row["index"].strip(), OPTION_LETTERS.index(answer)
        for rotation in range(len(options)):
            shown = options[rotation:] + options[:rotation]
            samples.append(
                BenchSample(
                    id=f"{index}/{rotation}",
                    image_path=None,
                    image_base64=row["image"],
                    question=multiple_choice_prompt(row["question"].strip(), shown, hint),
                    answer=OPTION_LETTERS[(correct - rotation) % len(options)],
                    meta={
                        "index": index,
                        "rotation": rotation,
                        "num_rotations": len(options),
                        "category": (row.get("category") or "").strip(),
                        "l2_category": (row.get("l2-category") or "").strip(),
                        "choices": shown,
                    },
                )
            )
    return samples


def score(samples: list[BenchSample], predictions: dict[str, str]) -> dict:
    """Circular accuracy (a question counts only if every rotation is right), overall and per category."""
    question_right: dict[str, bool] = {}
    first_rotation_right: dict[str, bool] = {}
    categories: dict[str, tuple[str, str]] = {}
    for sample in samples:
        index, choices = sample.meta["index"], sample.meta["choices"]
        right = choice_letter(predictions.get(sample.id, ""), len(choices), choices) == sample.answer
        question_right[index] = question_right.get(index, True) and right
        if sample.meta["rotation"] == 0:
            first_rotation_right[index] = right
        categories[index] = (sample.meta["category"], sample.meta["l2_category"])

    def grouped(level: int) -> dict[str, float]:
        groups: dict[str, list[bool]] = defaultdict(list)
        for index, right in question_right.items():
            groups[categories[index][level]].append(right)
        return {name: percent(sum(values), len(values)) for name, values in sorted(groups.items())}

    return {
        "circular_accuracy": percent(sum(question_right.values()), len(question_right)),
        "vanilla_accuracy": percent(sum(first_rotation_right.values()), len(first_rotation_right)),
        "num_questions": len(question_right),
        "categories": grouped(0),
        "l2_categories": grouped(1),
    }
