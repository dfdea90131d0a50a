"""Which tokens make a layer look redundant: per-layer cos(h_in, h_out) on a shapes model, by token group.

    .venv/bin/python benchmarks/toy_token_cosine.py [--model toy|smol-llava] [--num-samples N]

Runs the model's bundled calibration set (256 samples, or the first N) with hooks on the decoder layers
and averages, per layer, the cosine between the layer's input and output hidden states over:
image tokens, text tokens (non-padding, non-image, including the answer), all of these, and the
last prompt token (the position that predicts the answer). Prints each group's five most
redundant layers (highest cosine, what a 30% cut removes) next to tis-cosine's plans (with the
shared chat template skipped, the default, and kept), and which tokens TIS ranks important: mean
TIS and the share of each token role selected, with the template kept and skipped. The Spearman
rank correlation of the groups' per-layer cosines (and of tis-cosine's own similarity, important
tokens) says how far the token choice can move a ranking at all; with `--loss-plan` (a plan whose
layer scores are the answer loss with each layer removed alone: `compare`'s plans/ppl.json), the
correlation of each group's cosine with that damage (higher cosine should mean lower loss) says
whether any token choice makes the cosine predict what a removal costs. Writes
benchmarks/results/toy_token_cosine.{json,md} (toy) or token_cosine_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from shortlvlm import get_adapter, load
from shortlvlm.capture import capture
from shortlvlm.data.calibration_set import Calibration, calibration_set, read_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.importance import (
    TIS,
    ImportanceAwareCollector,
    TokenImportance,
    template_length,
    template_mask,
)
from shortlvlm.pruning import Provenance, score
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
    capture(model, adapter, batches, collector, attention_layers=layers)
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


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation of two per-layer series (no ties in practice: float cosines)."""
    ranks = [torch.tensor(v, dtype=torch.float64).argsort().argsort().double() for v in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", help="toy or smol-llava (their bundled calibration sets)")
    parser.add_argument("--num-samples", type=int, default=None, help="first N calibration samples (default: all)")
    parser.add_argument("--loss-plan", default=None,
                        help="a ppl plan (layer scores: answer perplexity with one layer removed) to correlate with")
    args = parser.parse_args()
    model, processor = load(args.model, dtype=torch.float32)
    adapter = get_adapter(model)
    calibration = list(read_calibration(Calibration(num_samples=args.num_samples), args.model).samples)
    batches = encode_calibration(calibration, processor, adapter, batch_size=8)
    cosines = token_cosines(model, adapter, batches)
    cut = round(0.3 * adapter.num_layers)
    top = {g: sorted(sorted(range(adapter.num_layers), key=lambda i: -v[i])[:cut]) for g, v in cosines.items()}
    for label, skip in (("tis-cosine, template skipped (default)", True), ("tis-cosine, template kept", False)):
        encoded = calibration_set(calibration).with_batches(batches)
        plan = score(model, processor, scorer=TISCosine(tis=TIS(skip_template=skip)), calibration=encoded,
                     adapter=adapter,
                     provenance=Provenance(method="tis-cosine", source=args.model))
        top[label] = sorted(plan.params["removal_order"][:cut])
        if skip:
            cosines["important (TIS)"] = list(plan.layer_scores)
    correlation = {f"{a} vs {b}": spearman(cosines[a], cosines[b])
                   for i, a in enumerate(cosines) for b in list(cosines)[i + 1:]}
    damage = {}
    if args.loss_plan:
        loss = json.loads(Path(args.loss_plan).read_text())["layer_scores"]
        inner = slice(1, adapter.num_layers - 1)  # the first and last layers, which no rule removes, left out
        damage = {g: {"all layers": spearman(v, [-x for x in loss]),
                      "without first and last": spearman(v[inner], [-x for x in loss[inner]])}
                  for g, v in cosines.items()}
    template = template_length(batches)
    template_words = processor.tokenizer.convert_ids_to_tokens(batches[0].inputs["input_ids"][0, :template].tolist())
    roles = {"template kept": role_importance(model, adapter, batches, template, skip=False),
             "template skipped": role_importance(model, adapter, batches, template, skip=True)}
    RESULTS.mkdir(exist_ok=True)
    name = "toy_token_cosine" if args.model == "toy" else f"token_cosine_{args.model}"
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"model": args.model, "num_samples": len(calibration), "cosines": cosines, "top": top,
         "spearman": correlation, "loss_plan": args.loss_plan, "spearman_with_minus_loss": damage,
         "template": template_words, "roles": roles}, indent=2) + "\n")
    command = "benchmarks/toy_token_cosine.py" + ("" if args.model == "toy" else f" --model {args.model}") + (
        f" --num-samples {args.num_samples}" if args.num_samples else "") + (
        f" --loss-plan {args.loss_plan}" if args.loss_plan else "")
    lines = [f"# Per-layer cos(h_in, h_out) on {args.model} by token group",
             "", f"`.venv/bin/python {command}` (bundled calibration set, {len(calibration)} samples)", "",
             "| layer | " + " | ".join(cosines) + " |", "|---" * (len(cosines) + 1) + "|"]
    for i in range(adapter.num_layers):
        lines.append(f"| {i} | " + " | ".join(f"{cosines[g][i]:.4f}" for g in cosines) + " |")
    lines += ["", f"The {cut} most redundant layers (a 30% cut) by group:", ""]
    lines += [f"- {g}: {v}" for g, v in top.items()]
    lines += ["", "Spearman rank correlation of the per-layer cosines (1: the same ranking):", ""]
    lines += [f"- {pair}: {value:.3f}" for pair, value in correlation.items()]
    if damage:
        lines += ["", f"Spearman correlation of each group's cosine with minus the answer loss of removing that "
                  f"layer alone ({args.loss_plan}; 1: the cosine orders layers exactly as their removal damage):", "",
                  "| group | all layers | without the first and last |", "|---|---|---|"]
        lines += [f"| {g} | {v['all layers']:.3f} | {v['without first and last']:.3f} |" for g, v in damage.items()]
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
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
