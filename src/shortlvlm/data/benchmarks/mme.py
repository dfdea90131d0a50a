"""MME (14 yes/no subtasks, two questions per image); metrics as MME's eval_tool/calculation.py."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from shortlvlm.data.benchmarks.answers import mme_yes_no
from shortlvlm.data.benchmarks.base import BenchSample, field_of, percent, read_jsonl
from shortlvlm.data.benchmarks.prompts import SHORT_ANSWER, short_answer_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "mme"
NEEDS_DATA = True
HEADLINE = ("total",)  # the number the paper reports (a path into the metrics)
RELEASE = "MME_Benchmark_release_version"
QUESTIONS = "llava_mme.jsonl"
PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
YES_NO_SUFFIX = "Please answer yes or no."
LAYOUT = """\
  llava_mme.jsonl                       optional: LLaVA's prompts {"question_id", "image", "text", "category"}
  MME_Benchmark_release_version/
    <subtask>/images/<name>.jpg         for artwork, celebrity, landmark, posters, scene
    <subtask>/questions_answers_YN/<name>.txt
    <subtask>/<name>.png + <name>.txt   for the other 9 subtasks
  each .txt: two lines 'question<TAB>Yes|No'"""


@dataclass(frozen=True)
class _Question:
    subtask: str
    image: Path
    position: int
    text: str
    answer: str

    @property
    def image_key(self) -> str:
        return f"{self.subtask}/{self.image.name}"


def _match_key(subtask: str, image_stem: str, text: str) -> tuple[str, str, str]:
    # LLaVA's llava_mme.jsonl drops "Please answer yes or no." and adds its own instruction.
    bare = text.replace(SHORT_ANSWER, "").replace(YES_NO_SUFFIX, "")
    return subtask, image_stem, " ".join(bare.split())


def _read_subtask(release: Path, subtask: str) -> list[_Question]:
    folder = release / subtask
    if not folder.is_dir():
        raise BenchmarkDataError(f"missing MME subtask folder: {folder}\nExpected layout:\n{LAYOUT}")
    image_dir, qa_dir = (
        (folder / "images", folder / "questions_answers_YN")
        if (folder / "images").is_dir()
        else (folder, folder)
    )
    if not qa_dir.is_dir():
        raise BenchmarkDataError(f"missing MME answer folder: {qa_dir}\nExpected layout:\n{LAYOUT}")
    images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    questions = []
    for txt in sorted(qa_dir.glob("*.txt")):
        if txt.stem not in images:
            raise BenchmarkDataError(
                f"{txt}: no image named {txt.stem}{{{','.join(IMAGE_SUFFIXES)}}} in {image_dir}"
            )
        try:
            text = txt.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BenchmarkDataError(f"{txt}: not UTF-8 text ({exc.reason})") from None
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        for position, (lineno, line) in enumerate(lines):
            parts = line.strip().split("\t")
            if len(parts) != 2 or parts[1].strip().lower() not in ("yes", "no"):
                raise BenchmarkDataError(
                    f"{txt}, line {lineno}: expected 'question<TAB>Yes' or 'question<TAB>No'"
                )
            questions.append(
                _Question(subtask, images[txt.stem], position, parts[0].strip(), parts[1].strip().lower())
            )
    return questions


def _sample(question: _Question, prompt: str) -> BenchSample:
    return BenchSample(
        id=f"{question.image_key}#{question.position}",
        image_path=question.image,
        question=prompt,
        answer=question.answer,
        meta={"subtask": question.subtask, "image_key": question.image_key},
    )


def _from_llava_questions(path: Path, questions: list[_Question]) -> list[BenchSample]:
    by_key = {_match_key(q.subtask, q.image.stem, q.text): q for q in questions}
    samples = []
    for lineno, record in read_jsonl(path):
        where = f"{path}, line {lineno}"
        subtask = str(field_of(record, "category", where))
        image_stem = Path(str(field_of(record, "question_id", where))).stem
        text = str(field_of(record, "text", where))
        question = by_key.get(_match_key(subtask, image_stem, text))
        if question is None:
            raise BenchmarkDataError(f"{where}: no matching question in {RELEASE}/{subtask} for {text!r:.80}")
        samples.append(_sample(question, short_answer_prompt(text)))
    return samples


def _cut_at_image_boundary(samples: list[BenchSample], limit: int | None) -> list[BenchSample]:
    """The first `limit` questions, plus the rest of the last image's questions (acc+ needs both)."""
    if limit is None or limit >= len(samples):
        return samples
    keep = limit
    while keep < len(samples) and samples[keep].meta["image_key"] == samples[keep - 1].meta["image_key"]:
        keep += 1
    return samples[:keep]


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """MME questions with answers from the official release; prompts from llava_mme.jsonl when present."""
    release = root / RELEASE
    if not release.is_dir():
        raise BenchmarkDataError(
            f"missing MME release folder: {release}\nExpected layout under {root}:\n{LAYOUT}"
        )
    questions = [q for subtask in PERCEPTION + COGNITION for q in _read_subtask(release, subtask)]
    if (root / QUESTIONS).is_file():
        samples = _from_llava_questions(root / QUESTIONS, questions)
    else:
        samples = [_sample(q, short_answer_prompt(q.text.replace(YES_NO_SUFFIX, ""))) for q in questions]
    return _cut_at_image_boundary(samples, limit)


def score(samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False) -> dict:
    """Per subtask acc and acc+ (percent) and score = acc + acc+; perception and cognition sums.

    MME's eval_tool/calculation.py `process_result`: acc over questions and acc+ over images (both
    questions right), an answer that reads as neither yes nor no ('other') being wrong. Its
    `compute_metric` also builds sklearn precision/recall from the yes/no answers only and stops on a
    subtask where none reads as yes or no; the score does not use them, so it is reported (0 + 0)
    with a note. `lenient` changes nothing: calculation.py's rule is already its own lenient reading.
    """
    correct: dict[str, list[bool]] = defaultdict(list)
    readable: dict[str, int] = defaultdict(int)
    image_correct: dict[str, dict[str, bool]] = defaultdict(dict)
    for sample in samples:
        subtask, key = sample.meta["subtask"], sample.meta["image_key"]
        parsed = mme_yes_no(predictions.get(sample.id, ""))
        right = parsed == sample.answer
        correct[subtask].append(right)
        readable[subtask] += parsed != "other"
        image_correct[subtask][key] = image_correct[subtask].get(key, True) and right
    subtasks, notes = {}, []
    for subtask in [s for s in PERCEPTION + COGNITION if s in correct]:
        acc = percent(sum(correct[subtask]), len(correct[subtask]))
        acc_plus = percent(sum(image_correct[subtask].values()), len(image_correct[subtask]))
        subtasks[subtask] = {
            "acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus,
            "num_questions": len(correct[subtask]), "num_images": len(image_correct[subtask]),
            "num_other": len(correct[subtask]) - readable[subtask],
        }  # fmt: skip
        if not readable[subtask]:
            notes.append(f"{subtask}: no answer reads as yes or no; calculation.py stops in compute_metric "
                         f"(sklearn on empty lists), the formula gives score {acc + acc_plus:g}")
    perception = sum(subtasks[s]["score"] for s in PERCEPTION if s in subtasks)
    cognition = sum(subtasks[s]["score"] for s in COGNITION if s in subtasks)
    return {
        "perception": perception,
        "cognition": cognition,
        "total": perception + cognition,
        "subtasks": subtasks,
        "subtasks_not_scored": [s for s in PERCEPTION + COGNITION if s not in subtasks],
        "notes": notes,
    }
