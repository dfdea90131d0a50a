"""Toy LVLM: accuracy per family, text-only baselines, and how much naive layer cuts cost.

    .venv/bin/python benchmarks/toy_baselines.py [--model toy|smol-llava] [--limit 1200] [--out benchmarks/results]

Writes toy_baselines.{json,md} (smol_baselines.{json,md} for --model smol-llava). Measured, never
asserted (see tests for guards).
- question-majority: the best text-only predictor, i.e. for each exact question string the most
  frequent answer over 30,000 training questions (family majority when the question is unseen);
- blank-image: the trained model answering with every image replaced by an empty background;
- naive 30% cuts: `last` (drop the last layers) and `random` (3 seeds), no scoring at all.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from PIL import Image

from shortlvlm import drop_layers, get_adapter, load
from shortlvlm.data.benchmarks.shapes import load_shapes, score_shapes
from shortlvlm.eval.generate import answer_samples
from shortlvlm.report import accuracy_table
from shortlvlm.testbeds.toy.data import BACKGROUND, IMAGE_SIZE, make_split


def question_majority(samples, train_size: int = 30_000) -> dict[str, str]:
    by_question, by_family = defaultdict(Counter), defaultdict(Counter)
    for toy in make_split("train", train_size):
        by_question[toy.question][toy.answer] += 1
        by_family[toy.family][toy.answer] += 1
    return {
        s.id: (by_question.get(s.question) or by_family[s.meta["family"]]).most_common(1)[0][0]
        for s in samples
    }


def pruned_accuracy(model_name: str, samples, removed: list[int]) -> dict:
    model, processor = load(model_name, dtype=torch.float32)
    drop_layers(model, removed)
    return score_shapes(samples, answer_samples(model, processor, samples, batch_size=50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--limit", type=int, default=1200)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    samples = load_shapes(args.limit)
    model, processor = load(args.model, dtype=torch.float32)
    num_layers = get_adapter(model).num_layers
    rows = {}
    start = time.time()
    rows["unpruned"] = score_shapes(samples, answer_samples(model, processor, samples, batch_size=50))
    blank = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    blank_samples = [type(s)(**{**s.__dict__, "image": blank}) for s in samples]
    rows["blank-image"] = score_shapes(samples, answer_samples(model, processor, blank_samples, batch_size=50))
    rows["question-majority"] = score_shapes(samples, question_majority(samples))
    n_cut = round(args.ratio * num_layers)
    rows[f"last-{n_cut}"] = pruned_accuracy(args.model, samples, list(range(num_layers - n_cut, num_layers)))
    for seed in range(3):
        removed = sorted(random.Random(seed).sample(range(num_layers), n_cut))
        rows[f"random-{n_cut}-seed{seed}"] = {**pruned_accuracy(args.model, samples, removed), "removed": removed}
    result = {"model": args.model, "num_layers": num_layers, "num_questions": len(samples),
              "seconds": round(time.time() - start, 1), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "smol_baselines" if args.model == "smol-llava" else "toy_baselines"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = accuracy_table(rows)
    (out / f"{name}.md").write_text(
        f"# {args.model} baselines ({len(samples)} test questions, {num_layers} layers)\n\n"
        f"Command: `.venv/bin/python benchmarks/toy_baselines.py --model {args.model} --limit {args.limit}`\n\n"
        f"{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
