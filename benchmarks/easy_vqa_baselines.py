"""A shapes model on easy-VQA's released test split: accuracy, what the text alone gives, what a blank image gives.

    .venv/bin/python benchmarks/easy_vqa_baselines.py [--model smol-llava] [--blank-limit 2000]
        [--out benchmarks/results]

easy-VQA (the `easy-vqa` package's data, `shortlvlm eval --bench easy-vqa`) asks about one shape on
a 64x64 image (yes/no, which shape, which color; 13 answers). None of our models was trained on it:
the shapes task has squares and crosses where easy-VQA has rectangles, and other colors, so this is
out-of-distribution transfer, not a held-out split. Rows:
- the model on every test question (the `eval` number);
- blank-image: the first `--blank-limit` test questions with a plain near-white 64x64 image
  (easy-VQA draws each shape on a random near-white background): what the model answers without
  seeing a shape;
- question-majority: for each exact question string the most frequent answer among easy-VQA's
  38,575 training questions (answer-type majority when unseen): the best text-only predictor;
- the share of the model's answers that are not one of the 13 (they can never be right).
Writes easy_vqa_baselines_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from PIL import Image

from shortlvlm import load
from shortlvlm.data.benchmarks import load_benchmark, score_benchmark
from shortlvlm.data.benchmarks.base import read_json
from shortlvlm.data.benchmarks.easyvqa import default_root, question_type, read_answer
from shortlvlm.eval.generate import answer_samples


def question_majority(samples, root: Path) -> dict[str, str]:
    """Each test question's most frequent training answer (by exact question, else by answer type)."""
    by_question, by_type = defaultdict(Counter), defaultdict(Counter)
    for question, answer, _ in read_json(root / "train" / "questions.json"):
        by_question[question][answer] += 1
        by_type[question_type(answer)][answer] += 1
    predictions = {}
    for sample in samples:
        question = sample.question.split("\n")[0]
        counts = by_question.get(question) or by_type[sample.meta["type"]]
        predictions[sample.id] = counts.most_common(1)[0][0]
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smol-llava")
    parser.add_argument("--blank-limit", type=int, default=2000, help="test questions asked with a blank image")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    root = default_root()
    if root is None:
        raise SystemExit("easy-VQA's data comes with the easy-vqa package: pip install easy-vqa")
    samples = load_benchmark("easy-vqa", root)
    model, processor = load(args.model, dtype=torch.float32)
    started = time.time()
    answers = answer_samples(model, processor, samples, batch_size=args.batch_size)
    answer_set = {line.strip() for line in (root / "answers.txt").read_text().splitlines() if line.strip()}
    outside = Counter(read_answer(a) for a in answers.values() if read_answer(a) not in answer_set)
    rows = {"model": score_benchmark("easy-vqa", samples, answers)}
    blank = Image.new("RGB", (64, 64), (245, 250, 245))
    subset = samples[:args.blank_limit]
    blank_samples = [type(s)(**{**s.__dict__, "image": blank, "image_path": None}) for s in subset]
    blank_answers = answer_samples(model, processor, blank_samples, batch_size=args.batch_size)
    rows["model, same questions as blank"] = score_benchmark("easy-vqa", subset, {s.id: answers[s.id] for s in subset})
    rows["blank-image"] = score_benchmark("easy-vqa", subset, blank_answers)
    rows["question-majority"] = score_benchmark("easy-vqa", samples, question_majority(samples, root))
    result = {"model": args.model, "num_questions": len(samples), "blank_limit": len(subset),
              "seconds": round(time.time() - started, 1), "rows": rows,
              "answers_outside_the_13": {"share": sum(outside.values()) / len(answers),
                                         "most_common": outside.most_common(10)},
              "predictions": answers}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"easy_vqa_baselines_{args.model}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# {args.model} on easy-VQA's test split ({len(samples)} questions, never trained on)", "",
             f"Command: `.venv/bin/python benchmarks/easy_vqa_baselines.py --model {args.model} "
             f"--blank-limit {args.blank_limit}`", "",
             "| setting | questions | accuracy | yes/no | shape | color |", "|---|---|---|---|---|---|"]
    for label, row in rows.items():
        types = row["types"]
        lines.append(f"| {label} | {row['num_questions']} | **{row['accuracy']:.1f}** | "
                     + " | ".join(f"{types.get(t, float('nan')):.1f}" for t in ("yes/no", "shape", "color")) + " |")
    share = result["answers_outside_the_13"]["share"]
    common = ", ".join(f"{a!r} ({n})" for a, n in outside.most_common(6))
    lines += ["", f"Answers that are not one of easy-VQA's 13: {100 * share:.1f}% (most common: {common})."]
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
