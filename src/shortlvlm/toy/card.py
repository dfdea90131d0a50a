"""Write the toy checkpoint's model card from its training log and measured baselines.

    python -m shortlvlm.toy.card --checkpoint src/shortlvlm/toy/checkpoint \
        --baselines benchmarks/results/toy_baselines.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shortlvlm.report import accuracy_table

CHANCE = {"exists": 50.0, "attribute": 20.8, "count": 20.0, "spatial": 50.0, "compositional": 20.8, "choice": 25.0}


def table(rows: dict) -> str:
    """The accuracy table with a chance row under the header."""
    lines = accuracy_table(rows).splitlines()
    families = list(next(iter(rows.values()))["per_family"])
    chance = f"| chance | - | {' | '.join(f'{CHANCE[f]:.1f}' for f in families)} |"
    return "\n".join([*lines[:2], chance, *lines[2:]])


def model_card(log: dict, baselines: dict) -> str:
    args = log["args"]
    last = log["evals"][-1]
    recipe = ", ".join(f"{k}={v}" for k, v in args.items() if k not in ("out",))
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [shortlvlm, toy, llava]
---

# shortlvlm toy LVLM

A small LLaVA (`LlavaForConditionalGeneration`) trained from scratch by shortlvlm on its synthetic
`shapes` visual-QA task, shipped so that pruning can be measured on a CPU with no download. It
loads like any LLaVA: `AutoModelForImageTextToText.from_pretrained(path)` and
`AutoProcessor.from_pretrained(path)`.

- vision: CLIP-style tower, 2 layers, width 128, 48x48 images in 12-px patches (16 image tokens,
  one per grid cell); projector: 2-layer MLP with GELU;
- language model: Llama, {baselines['num_layers']} decoder layers, width 128, 4 heads, word-level vocabulary;
- prompt: `USER : <image> question ASSISTANT :`, answers are one word.

## Accuracy on the shapes test split ({baselines['num_questions']} questions, greedy decoding)

{table(baselines['rows'])}

`question-majority` is the best text-only predictor (for each exact question, the most frequent
answer over 30,000 training questions); `blank-image` is this model with every image blank;
`last-N` and `random-N` remove N layers with no scoring at all (the discrimination check).
Reproduce: `.venv/bin/python benchmarks/toy_baselines.py --limit {baselines['num_questions']}`.

## Training recipe

`python -m shortlvlm.toy.train --out DIR` with {recipe}.
Loss on the answer word and `</s>`, plus two dense auxiliary targets on the 16 projected image
tokens: a classifier of each cell's content, and a cosine pull of each occupied cell's token
towards the sum of the language model's input embeddings of its colour and shape words. The
distractor count ramps from 0 to 6 over the first {args['curriculum_steps']} steps. Vision features
are standardised with running statistics during training; the standardisation is folded into the
projector's first linear layer at save time, so this is a plain LLaVA checkpoint.
Training took {last['minutes']} minutes on 2 CPU cores; last validation (teacher-forced first
answer token): {last['val_accuracy']['overall']}%.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--baselines", required=True)
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint)
    log = json.loads((checkpoint / "training_log.json").read_text())
    baselines = json.loads(Path(args.baselines).read_text())
    (checkpoint / "README.md").write_text(model_card(log, baselines))


if __name__ == "__main__":
    main()
