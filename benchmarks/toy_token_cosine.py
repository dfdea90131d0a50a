"""Which tokens make a layer look redundant: per-layer cos(h_in, h_out) on the toy, by token group.

    .venv/bin/python benchmarks/toy_token_cosine.py

Runs the bundled calibration set (256 samples) through the toy with hooks on the decoder layers
and averages, per layer, the cosine between the layer's input and output hidden states over:
image tokens, text tokens (non-padding, non-image, including the answer), all of these, and the
last prompt token (the position that predicts the answer). Prints each group's five most
redundant layers (highest cosine, what a 30% cut removes) next to tis-cosine's plans (with the
shared chat template skipped, the default, and kept), and which tokens TIS ranks important: mean
TIS and the share of each token role selected, with the template kept and skipped. Writes
benchmarks/results/toy_token_cosine.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shortlvlm import get_adapter, load
from shortlvlm.capture import capture
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.data.calibration_set import calibration_set
from shortlvlm.data.encode import encode_calibration
from shortlvlm.importance import (
    TIS,
    ImportanceAwareCollector,
    TokenImportance,
    template_length,
    template_mask,
)
from shortlvlm.pruning import score
from shortlvlm.scoring import TISCosine

RESULTS = Path(__file__).parent / "results"
GROUPS = ("image", "text", "all", "last prompt token")
ROLES = ("template text", "question", "last prompt token", "answer", "image")


def last_prompt_mask(batch) -> torch.Tensor:
    """[B, T] the position just before each row's first answer token (the one that predicts it)."""
    last = torch.zeros_like(batch.valid)
    last[torch.arange(len(last)), batch.answer.float().argmax(dim=1) - 1] = True
    return last


def role_masks(batch, template: int) -> dict[str, torch.Tensor]:
    """[B, T] masks of the token roles (the template measured on the calibration set)."""
    skipped = template_mask(batch, template) & batch.text
    last = last_prompt_mask(batch)
    question = batch.text & ~skipped & ~last & ~batch.answer
    return {"template text": skipped, "question": question, "last prompt token": last & batch.valid,
            "answer": batch.answer & batch.valid, "image": batch.image}


class RoleImportance(ImportanceAwareCollector):
    """Mean TIS and the fraction selected as important, per token role."""

    def __init__(self, importance: TokenImportance, template: int):
        super().__init__(importance)
        self.template = template
        self.score_sum = dict.fromkeys(ROLES, 0.0)
        self.selected = dict.fromkeys(ROLES, 0)
        self.count = dict.fromkeys(ROLES, 0)

    def end_batch(self) -> None:
        scores, chosen = self.importance.scores(), self.importance.mask()
        for role, mask in role_masks(self.batch, self.template).items():
            self.count[role] += int(mask.sum())
            self.selected[role] += int((chosen & mask).sum())
            self.score_sum[role] += float(scores[mask].nan_to_num(0.0).sum())

    def table(self) -> dict[str, dict[str, float]]:
        return {r: {"tokens": self.count[r], "mean_tis": self.score_sum[r] / max(self.count[r], 1),
                    "selected": self.selected[r] / max(self.count[r], 1)} for r in ROLES}


def role_importance(model, adapter, batches, template: int, skip: bool) -> dict:
    layers = list(range(adapter.num_layers))
    collector = RoleImportance(TokenImportance(layers, TIS().top_p, template=template if skip else 0), template)
    capture(model, adapter, batches, collector, attention_layers=layers, progress=False)
    return collector.table()


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
            masks.clear()
            masks.update({"image": image, "text": real & ~image, "all": real,
                          "last prompt token": last_prompt_mask(batch)})
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
    cut = round(0.3 * adapter.num_layers)
    top = {g: sorted(sorted(range(adapter.num_layers), key=lambda i: -v[i])[:cut]) for g, v in cosines.items()}
    for label, skip in (("tis-cosine, template skipped (default)", True), ("tis-cosine, template kept", False)):
        encoded = calibration_set(calibration).with_batches(batches)
        plan = score(model, processor, scorer=TISCosine(tis=TIS(skip_template=skip)), calibration=encoded,
                     method="tis-cosine", adapter=adapter, source="toy", progress=False)
        top[label] = sorted(plan.params["removal_order"][:cut])
    template = template_length(batches)
    template_words = processor.tokenizer.convert_ids_to_tokens(batches[0].inputs["input_ids"][0, :template].tolist())
    roles = {"template kept": role_importance(model, adapter, batches, template, skip=False),
             "template skipped": role_importance(model, adapter, batches, template, skip=True)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "toy_token_cosine.json").write_text(json.dumps(
        {"cosines": cosines, "top": top, "template": template_words, "roles": roles}, indent=2) + "\n")
    lines = ["# Per-layer cos(h_in, h_out) on the toy by token group",
             "", "`.venv/bin/python benchmarks/toy_token_cosine.py` (bundled 256-sample calibration set)", "",
             "| layer | " + " | ".join(GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
    for i in range(adapter.num_layers):
        lines.append(f"| {i} | " + " | ".join(f"{cosines[g][i]:.4f}" for g in GROUPS) + " |")
    lines += ["", f"The {cut} most redundant layers (a 30% cut) by group:", ""]
    lines += [f"- {g}: {v}" for g, v in top.items()]
    lines += ["", f"Which tokens TIS ranks important (top_p {TIS().top_p} per modality, all probe layers). "
              f"The shared chat template is {template_words}; its text tokens are 'template text'; 'question' is "
              "the text between the image and the last prompt token (ASSISTANT included).", "",
              "| token role | tokens | mean TIS | selected, template kept | selected, template skipped |",
              "|---|---|---|---|---|"]
    for role in ROLES:
        kept, skipped = roles["template kept"][role], roles["template skipped"][role]
        lines.append(f"| {role} | {kept['tokens']} | {kept['mean_tis']:.4f} | {100 * kept['selected']:.0f}% | "
                     f"{100 * skipped['selected']:.0f}% |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "toy_token_cosine.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
