"""MMBench dev: one prompt per row of the released TSV, circular accuracy as MMBench's own evaluator.

The released `mmbench_dev_20230712.tsv` already holds the circular copies: a question with index i
is followed (later in the file) by rows with index i + k*1e6 whose options were rotated by MMBench's
authors; questions whose last option is fixed ("None of the above") keep it fixed in their copies.
Each row is asked once, as LLaVA's `model_vqa_mmbench.py` does without `--all-rounds`, and scored
as OpenCompass's tools/eval_mmbench.py `eval_result` (the MMBench dev evaluator; lmms-eval's
tasks/mmbench/mmbench_evals.py `MMBench_Evaluator.eval_result` is the same code): rows are grouped
by `index % 1e6`, and a question counts only if every row of its group reads (`mmbench_letter`) as
that row's answer. Upstream, an answer the rules cannot read goes to a GPT judge; offline it counts
as wrong, which is VLMEvalKit's `exact_matching` policy (vlmeval/dataset/utils/multiple_choice.py
`mcq_circular_eval` with no judge); `judge_would_decide` counts the questions where that matters.
That is the default policy, "exact". Policy "lmms-eval" scores as lmms-eval's offline MMBench
evaluator (its `mmbench_en_dev_static` task: mmbench_evals.py `eval_sub_data(static_only=True)`,
commit d0c1eae757): a row `can_infer` cannot read gets the letter `extract_mcq_answer` finds
(`lmms_eval_mcq_letter`), and a row with no letter found is wrong. Readable rows, the grouping and
the circular rule are the same under both; the metrics name the policy in `mmbench_policy`.

A TSV without copy rows (e.g. MMBench_DEV_EN files of later releases cut to one row per question)
makes every group a single row: the official grouping then gives plain single-pass accuracy, and a
note says so. The test split has no `answer` column (its answers are withheld): it is refused.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from shortlvlm.data.benchmarks import lenient as lenient_readers
from shortlvlm.data.benchmarks.answers import lmms_eval_mcq_letter, mmbench_letter
from shortlvlm.data.benchmarks.base import BenchSample, percent, require_file
from shortlvlm.data.benchmarks.prompts import multiple_choice_prompt
from shortlvlm.data.errors import BenchmarkDataError

NAME = "mmbench"
NEEDS_DATA = True
HEADLINE = ("circular_accuracy",)  # the number the paper reports (a path into the metrics)
TSV = "mmbench_dev_20230712.tsv"
REQUIRED_COLUMNS = ("index", "question", "A", "B", "answer", "image")
OPTION_COLUMNS = "ABCD"  # LLaVA model_vqa_mmbench.py `all_options`; the evaluator's `build_choices` reads A-D
COPY_OFFSET = 1_000_000  # a circular copy of question i has index i + k * 1e6
# What becomes of an answer MMBench's rules cannot read: wrong ("exact", the default: VLMEvalKit's
# exact_matching), or the letter lmms-eval's offline extraction finds ("lmms-eval").
POLICIES = ("exact", "lmms-eval")
LAYOUT = """\
  mmbench_dev_20230712.tsv   tab-separated, header: index question hint A B C D answer category image
                             source l2-category comment split (image = base64-encoded); rows with
                             index >= 1000000 are the released circular copies"""
# Base64 images make single TSV fields far larger than the csv module's default 128 KiB limit.
_FIELD_SIZE_LIMIT = 2**31 - 1
# pandas.read_table's default NA strings (LLaVA and the evaluator read the TSV with pandas): such a
# cell is NaN, which ends the options (LLaVA `get_options`) and drops the hint (`is_none`).
_PANDAS_NA = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})  # fmt: skip


def _is_missing(value: str | None) -> bool:
    # LLaVA's is_none also treats any-case "nan"/"none" strings as missing.
    return value is None or value in _PANDAS_NA or value.lower() in ("nan", "none")


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_SIZE_LIMIT))
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            columns = reader.fieldnames or []
            if "answer" not in columns and "index" in columns:
                raise BenchmarkDataError(
                    f"{path}: no 'answer' column; MMBench test answers are withheld and only the MMBench "
                    f"evaluation server scores that split. Use {TSV} (the dev split)."
                )
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise BenchmarkDataError(f"{path}: header lacks columns {missing}\nExpected:\n{LAYOUT}")
            return [(reader.line_num, row) for row in reader]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BenchmarkDataError(f"{path}: not a readable UTF-8 TSV file: {exc}") from None


def _options(row: dict[str, str]) -> list[str]:
    options = []
    for letter in OPTION_COLUMNS:
        if _is_missing(row.get(letter)):
            break
        options.append(row[letter])
    return options


def _index(row: dict[str, str], where: str) -> int:
    try:
        index = int((row.get("index") or "").strip())
    except ValueError:
        raise BenchmarkDataError(f"{where}: index must be an integer, got {row.get('index')!r}") from None
    if index < 0:
        raise BenchmarkDataError(f"{where}: index must not be negative, got {index}")
    return index


def _sample(row: dict[str, str], index: int, where: str) -> BenchSample:
    options = _options(row)
    answer = row.get("answer") or ""
    if len(options) < 2 or answer not in OPTION_COLUMNS[: len(options)]:
        raise BenchmarkDataError(f"{where}: needs options A, B, ... and an answer among them, got {answer!r}")
    empty = [column for column in ("question", "image") if _is_missing(row.get(column))]
    if empty:
        raise BenchmarkDataError(f"{where}: empty field(s) {empty}")
    hint = None if _is_missing(row.get("hint")) else row["hint"]
    return BenchSample(
        id=str(index),
        image_path=None,
        image_base64=row["image"],
        # LLaVA model_vqa_mmbench.py: '[hint\n]question\nA. ...' + the single-prediction instruction.
        question=multiple_choice_prompt(row["question"], options, hint),
        answer=answer,
        meta={
            "index": index,
            "group": index % COPY_OFFSET,
            "options": dict(zip(OPTION_COLUMNS, options, strict=False)),
            "category": row.get("category") or "",
            "l2_category": row.get("l2-category") or "",
        },
    )


def load(root: Path, limit: int | None) -> list[BenchSample]:
    """Every row of the TSV as one sample (id = its index); `limit` counts questions, copies included."""
    path = require_file(root, TSV, LAYOUT)
    rows = [(_index(row, f"{path}, row ending on line {n}"), n, row) for n, row in _read_rows(path)]
    questions = [index for index, _, _ in rows if index < COPY_OFFSET]
    kept = set(questions if limit is None else questions[:limit])
    # Copies of questions the file does not hold are never scored by the evaluator, so they are not asked.
    return [
        _sample(row, index, f"{path}, row ending on line {n}")
        for index, n, row in rows
        if index % COPY_OFFSET in kept
    ]


def _read(sample: BenchSample, prediction: str, lenient: bool, policy: str) -> tuple[bool, bool]:
    """(right, readable by MMBench's rules) for one row under the chosen parser and policy."""
    options = sample.meta["options"]
    if lenient:
        letter = lenient_readers.choice_letter(prediction, len(options), list(options.values()))
        return letter == sample.answer, letter is not None
    letter = mmbench_letter(prediction, options)
    readable = letter is not None
    if not readable and policy == "lmms-eval":
        # eval_sub_data passes sorted(build_choices(row)): the row's option letters.
        letter = lmms_eval_mcq_letter(prediction, "".join(options))
    return letter == sample.answer, readable


def score(
    samples: list[BenchSample], predictions: dict[str, str], *, lenient: bool = False, policy: str = "exact"
) -> dict:
    """Circular accuracy over questions (every row of a group right), single-pass accuracy, per category.

    `policy` ("exact" or "lmms-eval", see POLICIES) decides the rows MMBench's rules cannot read.
    """
    if policy not in POLICIES:
        raise BenchmarkDataError(f"unknown MMBench policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    groups: dict[int, list[tuple[bool, bool]]] = defaultdict(list)
    main: dict[int, tuple[BenchSample, bool]] = {}
    for sample in samples:
        right, readable = _read(sample, predictions.get(sample.id, ""), lenient, policy)
        groups[sample.meta["group"]].append((right, readable))
        if sample.meta["index"] < COPY_OFFSET:
            main[sample.meta["index"]] = (sample, right)
    hit = {index: all(right for right, _ in groups[index]) for index in main}
    # Upstream a judge is asked only in groups with an unreadable row and no readable row already
    # wrong; that depends on the rules alone, so the count is the same under both policies.
    judged = sum(
        any(not readable for _, readable in groups[index])
        and all(right for right, readable in groups[index] if readable)
        for index in main
    )

    def by(field: str) -> dict[str, float]:
        values: dict[str, list[bool]] = defaultdict(list)
        for index, (sample, _) in main.items():
            values[sample.meta[field]].append(hit[index])
        return {name: percent(sum(v), len(v)) for name, v in sorted(values.items())}

    notes = []
    if main and all(len(groups[index]) == 1 for index in main):
        notes.append(
            "no circular copies in this TSV (no row has index >= 1e6): every question was asked once, so the "
            "circular accuracy is the single-pass accuracy, as MMBench's evaluator groups rows by index mod 1e6"
        )
    if judged and not lenient and policy == "exact":
        notes.append(
            f"{judged} question(s) hold an answer MMBench's rules cannot read; the official evaluator asks a "
            "GPT judge about those, here they count as wrong (VLMEvalKit's exact_matching policy)"
        )
    elif judged and not lenient:
        notes.append(
            f"{judged} question(s) hold an answer MMBench's rules cannot read; the official evaluator asks a "
            "GPT judge about those, here lmms-eval's offline extraction (mcq_extract) read them (policy lmms-eval)"
        )
    return {
        "circular_accuracy": percent(sum(hit.values()), len(hit)),
        # The first row of each question alone, read by the same policy (VLMEvalKit's "vanilla_0").
        "vanilla_accuracy": percent(sum(right for _, right in main.values()), len(main)),
        "num_questions": len(hit),
        "judge_would_decide": judged if not lenient else 0,
        "mmbench_policy": policy,
        "categories": by("category"),
        "l2_categories": by("l2_category"),
        "notes": notes,
    }
