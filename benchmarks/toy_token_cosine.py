"""Which tokens make a layer look redundant: per-layer cos(h_in, h_out) on the toy, by token group.

    .venv/bin/python benchmarks/toy_token_cosine.py

Runs the bundled calibration set (256 samples) through the toy with hooks on the decoder layers
and averages, per layer, the cosine between the layer's input and output hidden states over:
image tokens, text tokens (non-padding, non-image, including the answer), all of these, and the
last prompt token (the position that predicts the answer). Prints each group's five most
redundant layers (highest cosine, what a 30% cut removes) next to tis-cosine's plan, and writes
benchmarks/results/toy_token_cosine.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shortlvlm import get_adapter, load
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.pruning import score

RESULTS = Path(__file__).parent / "results"
GROUPS = ("image", "text", "all", "last prompt token")


@torch.no_grad()
def token_cosines(model, adapter, batches) -> dict[str, list[float]]:
    num_layers = adapter.num_layers
    sums = {g: torch.zeros(num_layers, dtype=torch.float64) for g in GROUPS}
    counts = dict.fromkeys(GROUPS, 0)
    inputs, masks = {}, {}

    def pre(index):
        def hook(module, args, kwargs):
            inputs[index] = (args[0] if args else kwargs["hidden_states"]).double()
        return hook

    def post(index):
        def hook(module, args, kwargs, output):
            out = (output[0] if isinstance(output, tuple) else output).double()
            cos = torch.nn.functional.cosine_similarity(inputs.pop(index), out, dim=-1)  # [B, T]
            for group, mask in masks.items():
                sums[group][index] += cos[mask].sum()
        return hook

    handles = []
    for index, layer in enumerate(adapter.layers):
        handles.append(layer.register_forward_pre_hook(pre(index), with_kwargs=True))
        handles.append(layer.register_forward_hook(post(index), with_kwargs=True))
    try:
        for batch in batches:
            real = batch.real
            image = batch.image & real
            last = torch.zeros_like(real)
            first_answer = batch.answer.float().argmax(dim=1)  # answers follow the prompt
            last[torch.arange(len(last)), first_answer - 1] = True
            masks.clear()
            masks.update({"image": image, "text": real & ~image, "all": real, "last prompt token": last})
            for group, mask in masks.items():
                counts[group] += int(mask.sum())
            model(**batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {g: (sums[g] / counts[g]).tolist() for g in GROUPS}


def main() -> None:
    model, processor = load("toy", dtype=torch.float32)
    adapter = get_adapter(model)
    calibration = toy_calibration()
    batches = encode_calibration(calibration, processor, adapter, batch_size=8, progress=False)
    cosines = token_cosines(model, adapter, batches)
    plan = score(model, processor, calibration, "tis-cosine", adapter=adapter, source="toy", progress=False)
    cut = round(0.3 * adapter.num_layers)
    top = {g: sorted(sorted(range(adapter.num_layers), key=lambda i: -v[i])[:cut]) for g, v in cosines.items()}
    top["tis-cosine (important tokens)"] = sorted(plan.params["removal_order"][:cut])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "toy_token_cosine.json").write_text(json.dumps({"cosines": cosines, "top": top}, indent=2) + "\n")
    lines = ["# Per-layer cos(h_in, h_out) on the toy by token group",
             "", "`.venv/bin/python benchmarks/toy_token_cosine.py` (bundled 256-sample calibration set)", "",
             "| layer | " + " | ".join(GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
    for i in range(adapter.num_layers):
        lines.append(f"| {i} | " + " | ".join(f"{cosines[g][i]:.4f}" for g in GROUPS) + " |")
    lines += ["", f"The {cut} most redundant layers (a 30% cut) by group:", ""]
    lines += [f"- {g}: {v}" for g, v in top.items()]
    text = "\n".join(lines) + "\n"
    (RESULTS / "toy_token_cosine.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
