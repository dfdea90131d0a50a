"""Train smol-llava's parts: `python -m shortlvlm.testbeds.smol.train --out DIR [--init-lora PARTS]`.

LLaVA-1.5's two stages, shaped by what the 2-core machine allows (docs/testbed.md):
1. Alignment (LM frozen): the vision tower and projector learn to put each cell's image token on
   the frozen LM's input embeddings of the words that describe the cell (" red" + " circle",
   " empty"), plus half the mean embedding of its row and column words (" top", " leftmost", ...):
   like a CLIP patch feature, each token carries where it is. (1 - cos) + relative squared error;
   no LM forward is needed, so it takes about a minute. The features are standardised with
   running statistics during training and the standardisation is folded exactly into the
   projector afterwards (the toy's recipe).
2. Instruction tuning: LoRA adapters on every linear layer of the 30 LM layers (the projector stays
   as stage 1 left it), on the shapes task's answer tokens (bf16 autocast; spatial, counting and
   neighbour questions drawn more often, `--family-weights`), with dense auxiliary targets the
   toy recipe found necessary: the last prompt token of two-object questions predicts the two
   cells the answer depends on and how their columns and rows compare, and each option word of a
   multiple-choice question predicts whether it is the right one. A KL term keeps the LM's
   next-token distribution on held-apart English prose (Python's reference documentation) close
   to the untuned LM's, so the LM stays a general language model. Only the adapters' factors
   ship, so the pretrained LM's weights stay as they are plus a low-rank delta. `--init-lora`
   starts the adapters from an earlier run's parts (the shipped parts were trained that way).

Writes DIR/parts.safetensors + DIR/parts.json (what `assemble` needs), DIR/train_log.jsonl (one
line per evaluation), and checkpoints every evaluation so an interrupted run can `--resume`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from shortlvlm.testbeds.smol.encode import encode
from shortlvlm.testbeds.smol.parts import lora_factors, save_parts
from shortlvlm.testbeds.toy.data import (
    COLORS,
    FAMILIES,
    GRID,
    LETTERS,
    SHAPES,
    ToySample,
    make_sample,
    make_split,
)
from shortlvlm.testbeds.toy.train import VisionStandardizer, cell_targets, fold_standardizer, relation_targets

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Words whose embeddings mark a cell's row and column on its image token (docs/testbed.md, "Where
# a cell is"): a CLIP patch feature carries its position; a token that carried only the cell's
# content left spatial questions at chance (52% after 1000 stage-2 steps, measured).
ROW_WORDS = ("top", "upper", "lower", "bottom")
COLUMN_WORDS = ("leftmost", "left", "right", "rightmost")


def word_ids(tokenizer, words: str) -> list[int]:
    """Token ids of words as they appear inside a question (after a space)."""
    return tokenizer(" " + words, add_special_tokens=False)["input_ids"]


def cell_word_targets(embeddings: torch.Tensor, tokenizer) -> torch.Tensor:
    """[1 + shapes*colours, d]: the mean input embedding of each cell content's words (row 0: " empty")."""
    rows = [embeddings[word_ids(tokenizer, "empty")].mean(0)]
    for shape in SHAPES:
        for color in COLORS:
            rows.append(embeddings[word_ids(tokenizer, f"{color} {shape}")].mean(0))
    return torch.stack(rows)


def cell_position_targets(embeddings: torch.Tensor, tokenizer) -> torch.Tensor:
    """[GRID*GRID, d]: per cell (row-major), the mean of its row word's and column word's embeddings."""
    rows = [embeddings[word_ids(tokenizer, w)].mean(0) for w in ROW_WORDS]
    columns = [embeddings[word_ids(tokenizer, w)].mean(0) for w in COLUMN_WORDS]
    return torch.stack([(rows[r] + columns[c]) / 2 for r in range(GRID) for c in range(GRID)])


def token_targets(content: torch.Tensor, position: torch.Tensor, weight: float) -> torch.Tensor:
    """[classes, GRID*GRID, d]: the wanted image token for each cell content at each cell."""
    return content[:, None] + weight * position[None]


def align(model, processor, args, log) -> None:
    """Stage 1: vision tower + projector onto the frozen LM's word embeddings; standardiser folded in."""
    projector, tower = model.model.multi_modal_projector, model.model.vision_tower
    standardizer = VisionStandardizer(model.config.vision_config.hidden_size)
    hook = projector.register_forward_pre_hook(lambda module, inputs: (standardizer(inputs[0]),))
    table = model.get_input_embeddings().weight.detach()
    targets = token_targets(cell_word_targets(table, processor.tokenizer),
                            cell_position_targets(table, processor.tokenizer), args.position_weight)
    cells = torch.arange(GRID * GRID)
    params = [*tower.parameters(), *projector.parameters()]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=args.align_lr, weight_decay=0.0)
    tower.train()
    progress = tqdm(range(1, args.align_steps + 1), desc="stage 1 (align)", unit="step")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = args.align_lr * min(1.0, step / 50) * 0.5 * (1 + math.cos(math.pi * step / args.align_steps))
        samples = make_split("train", args.align_batch, start=5_000_000 + step * args.align_batch)
        pixels = processor.image_processor([s.image() for s in samples], return_tensors="pt")["pixel_values"]
        tokens = model.model.get_image_features(pixel_values=pixels).pooler_output
        tokens = torch.stack(list(tokens)) if isinstance(tokens, (list, tuple)) else tokens
        tokens = tokens.reshape(len(samples), GRID * GRID, -1)
        wanted = targets[cell_targets(samples), cells]
        cosine = nn.functional.cosine_similarity(tokens, wanted, dim=-1).mean()
        relative = ((tokens - wanted).pow(2).sum(-1) / wanted.pow(2).sum(-1)).mean()
        loss = (1 - cosine) + relative
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.set_postfix(cos=f"{cosine.item():.4f}", rel=f"{relative.item():.4f}")
    hook.remove()
    fold_standardizer(model, standardizer)
    tower.eval().requires_grad_(False)
    projector.requires_grad_(False)
    log({"stage": 1, "steps": args.align_steps, "cosine": round(cosine.item(), 5),
         "relative_se": round(relative.item(), 5), "after_fold": alignment_quality(model, processor, targets)})


@torch.no_grad()
def alignment_quality(model, processor, targets: torch.Tensor, size: int = 256) -> dict:
    """Held-out cosine to the targets, and how often the nearest of all (content, cell) targets is the right one."""
    samples = make_split("calibration", size, start=2_000_000)
    pixels = processor.image_processor([s.image() for s in samples], return_tensors="pt")["pixel_values"]
    tokens = model.model.get_image_features(pixel_values=pixels).pooler_output
    tokens = torch.stack(list(tokens)) if isinstance(tokens, (list, tuple)) else tokens
    tokens = tokens.reshape(-1, tokens.shape[-1])
    classes = cell_targets(samples).flatten()
    cells = torch.arange(GRID * GRID).repeat(len(samples))
    cosine = nn.functional.cosine_similarity(tokens, targets[classes, cells], dim=-1).mean().item()
    flat = targets.reshape(-1, targets.shape[-1])
    nearest = torch.cat([nn.functional.cosine_similarity(chunk[:, None], flat[None], dim=-1).argmax(-1)
                         for chunk in tokens.split(512)])
    right = classes * GRID * GRID + cells
    return {"cosine": round(cosine, 5), "nearest_target_accuracy": round((nearest == right).float().mean().item(), 4)}


def question_span(input_ids: torch.Tensor, question_ids: list[int]) -> int:
    """Index where the question's tokens start in one row (searched from the end)."""
    n = len(question_ids)
    wanted = torch.tensor(question_ids)
    for start in range(len(input_ids) - n, -1, -1):
        if torch.equal(input_ids[start:start + n], wanted):
            return start
    raise ValueError("question tokens not found in the prompt")


def option_positions(processor, samples, input_ids: torch.Tensor, prompt_length: int) -> dict:
    """Rows, positions and is-correct targets of each option's shape word in multiple-choice questions."""
    tok = processor.tokenizer
    option = {"rows": [], "positions": [], "correct": []}
    for row, sample in enumerate(samples):
        if sample.meta["kind"] != "choice":
            continue
        encoded = tok(sample.question, add_special_tokens=False, return_offsets_mapping=True)
        start = question_span(input_ids[row, :prompt_length], encoded["input_ids"])
        for letter, shape in zip(LETTERS, sample.meta["options"], strict=True):
            at = sample.question.index(f" {letter} . {shape}") + len(f" {letter} . ")
            token = next(i for i, (lo, hi) in enumerate(encoded["offset_mapping"]) if lo <= at < hi or lo == at - 1)
            option["rows"].append(row)
            option["positions"].append(start + token)
            option["correct"].append(int(letter == sample.answer))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in option.items()}


PRECISIONS = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def mixed_precision(dtype: torch.dtype):
    """The recipe's autocast (bfloat16); float32 turns it off (CPUs without bfloat16 units run it many times
    slower: the end-to-end test uses it)."""
    return torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)


@torch.no_grad()
def first_token_accuracy(model, processor, samples: list[ToySample], batch_size: int = 50,
                         dtype: torch.dtype = torch.bfloat16) -> dict:
    """Share of questions whose greedy first answer token is the answer's first token, per family."""
    model.eval()
    hits = defaultdict(list)
    tok = processor.tokenizer
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        with mixed_precision(dtype):
            logits = model(**encode(processor, chunk, with_answers=False)).logits[:, -1]
        for sample, predicted in zip(chunk, logits.argmax(-1).tolist(), strict=True):
            hits[sample.family].append(predicted == tok(sample.answer, add_special_tokens=False)["input_ids"][0])
    model.train()
    result = {f: round(100 * sum(v) / len(v), 1) for f, v in sorted(hits.items())}
    result["overall"] = round(100 * sum(sum(v) for v in hits.values()) / len(samples), 1)
    return result


class TextWindows:
    """Windows of real English prose (Python's own reference documentation, `pydoc_data.topics`).

    Stage 2 keeps the LM's next-token distribution on them close to the untuned LM's (a KL term),
    so the tuned LM stays a general language model rather than a shapes answerer. Topics are split
    by name into training and held-out sets; every other row is wrapped as a ChatML exchange so
    the assistant turn's behaviour is kept too. (The drift benchmark's text, the Apache licence,
    is in neither.)
    """

    def __init__(self, tokenizer, held_out: bool, length: int):
        from pydoc_data.topics import topics

        names = [n for i, n in enumerate(sorted(topics)) if (i % 8 == 7) == held_out]
        self.ids = tokenizer("\n\n".join(topics[n] for n in names), add_special_tokens=False)["input_ids"]
        self.length = length
        self.user = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
        self.turn = tokenizer("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]

    def batch(self, index: int, size: int) -> torch.Tensor:
        rows = []
        for k in range(index * size, (index + 1) * size):
            start = (k * 104_729) % (len(self.ids) - self.length)
            window = self.ids[start:start + self.length]
            if k % 2:
                cut = self.length // 3
                window = (self.user + window[:cut] + self.turn + window[cut:])[:self.length]
            rows.append(window)
        return torch.tensor(rows)


def parse_family_weights(text: str) -> dict[str, float]:
    """"spatial=3,count=2" -> a weight per family (unnamed families weigh 1)."""
    weights = dict.fromkeys(FAMILIES, 1.0)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in weights:
            raise ValueError(f"unknown family {name!r} in --family-weights; families: {', '.join(FAMILIES)}")
        weights[name] = float(value)
    return weights


def training_batch(step: int, size: int, weights: dict[str, float], crowd: int) -> list[ToySample]:
    """Stage-2 batch `step`: training-split samples whose families are drawn with `weights` (seeded by step).

    Equal weights give the first recipe's batches: consecutive samples, families interleaved.
    """
    import random

    if len(set(weights.values())) == 1:
        return make_split("train", size, start=(step - 1) * size, crowd=crowd)
    families = random.Random(step).choices(list(weights), weights=list(weights.values()), k=size)
    return [make_sample("train", (step - 1) * size + i, family, crowd) for i, family in enumerate(families)]


def order_targets(firsts: torch.Tensor, seconds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per relation row: sign(column(a) - column(b)) + 1 and sign(row(a) - row(b)) + 1 (classes 0, 1, 2).

    A spatial question asks one of four comparisons of the two cells; these targets ask all of them
    at once at the last prompt token, so each spatial sample teaches the comparison, not one bit.
    """
    columns = torch.sign(firsts % GRID - seconds % GRID).long() + 1
    rows = torch.sign(firsts // GRID - seconds // GRID).long() + 1
    return columns, rows


def kl_to_reference(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(reference || model) between next-token distributions (float32)."""
    ref = reference.float().log_softmax(-1)
    return (ref.exp() * (ref - logits.float().log_softmax(-1))).sum(-1).mean()


@torch.no_grad()
def text_perplexity(model, windows: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> float:
    with mixed_precision(dtype):
        loss = model(input_ids=windows, labels=windows).loss
    return round(math.exp(loss.item()), 2)


def load_lora(peft_model, folder: Path) -> int:
    """Start the adapters from a parts folder's factors (B stored with the scale folded in)."""
    from safetensors.torch import load_file

    tensors = load_file(Path(folder) / "parts.safetensors")
    loaded = 0
    for name, module in peft_model.get_base_model().named_modules():
        if hasattr(module, "lora_A") and f"lora.{name}.A" in tensors:
            with torch.no_grad():
                module.lora_A["default"].weight.copy_(tensors[f"lora.{name}.A"].float())
                module.lora_B["default"].weight.copy_(tensors[f"lora.{name}.B"].float() / module.scaling["default"])
            loaded += 1
    if not loaded:
        raise ValueError(f"{folder}: no LoRA factors matching this model's adapters")
    return loaded


def instruction_tune(model, processor, args, log, out: Path) -> nn.Module:
    """Stage 2: LoRA on the LM, answer loss + relation and option targets."""
    from peft import LoraConfig, get_peft_model

    precision = PRECISIONS[args.precision]
    layers = model.config.text_config.num_hidden_layers
    lora = LoraConfig(r=args.rank, lora_alpha=args.rank * 2, lora_dropout=0.0, bias="none",
                      target_modules=rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(LORA_TARGETS)})")
    peft_model = get_peft_model(model, lora)
    projector = model.model.multi_modal_projector
    # The stage-1 standardiser is folded into linear_1, so its weights carry 1/std scales; Adam's
    # per-weight steps ignore that scale, and at lr 2e-4 the image tokens' norm went from 3.2 (the
    # word embeddings') to 405 within 200 steps, leaving answers at chance (measured). Frozen by default.
    projector.requires_grad_(args.projector_lr > 0)
    hidden = model.config.text_config.hidden_size
    heads = nn.ModuleDict({"first": nn.Linear(hidden, GRID * GRID), "second": nn.Linear(hidden, GRID * GRID),
                           "option": nn.Linear(hidden, 2), "columns": nn.Linear(hidden, 3),
                           "rows": nn.Linear(hidden, 3)})
    family_weights = parse_family_weights(args.family_weights)
    lora_params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(
        [{"params": lora_params, "lr": args.lr}, {"params": list(heads.parameters()), "lr": args.lr},
         {"params": list(projector.parameters()) if args.projector_lr > 0 else [], "lr": args.projector_lr}],
        weight_decay=0.0, betas=(0.9, 0.98))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    if args.init_lora:
        log({"init_lora": str(args.init_lora), "adapters": load_lora(peft_model, args.init_lora)})
    text = TextWindows(processor.tokenizer, held_out=False, length=args.text_length) if args.text_kl_weight else None
    held_out_text = TextWindows(processor.tokenizer, held_out=True, length=256).batch(0, 8)
    first_step = 1
    state_file = out / "resume.pt"
    if args.resume and state_file.is_file():
        state = torch.load(state_file, weights_only=True)
        peft_model.load_state_dict(state["model"], strict=False)
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        first_step = state["step"] + 1
        print(f"resumed at step {first_step}")
    val = make_split("calibration", args.val_size, start=10**6)
    if first_step == 1:
        with peft_model.disable_adapter():
            log({"stage": 2, "step": 0, "held_out_text_perplexity": text_perplexity(peft_model, held_out_text,
                                                                                          precision)})
    relation_layer, option_layer, order_layer = 5 * layers // 8, 3 * layers // 4, 3 * layers // 4
    peft_model.train()
    started = time.time()
    progress = tqdm(range(first_step, args.steps + 1), desc="stage 2 (LoRA)", unit="step", initial=first_step - 1,
                    total=args.steps)
    for step in progress:
        warm = min(1.0, step / args.warmup)
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * warm * decay
        crowd = min(6, int(6 * step / max(1, args.curriculum_steps)))
        samples = training_batch(step + args.data_offset, args.batch_size, family_weights, crowd)
        batch = encode(processor, samples, with_answers=True)
        prompt_length = batch.pop("prompt_length")
        width = batch["input_ids"].shape[1]  # the answer tail follows the prompt: last prompt token = width - tail - 1
        rows, positions, firsts, seconds = relation_targets(samples, width, tail=width - prompt_length)
        opt = option_positions(processor, samples, batch["input_ids"], prompt_length)
        with mixed_precision(precision):
            outputs = peft_model(**batch, output_hidden_states=True)
            relation_loss = option_loss = torch.zeros(())
            if len(rows):
                states = _normed(outputs.hidden_states[relation_layer][rows, positions])
                relation_loss = (nn.functional.cross_entropy(heads["first"](states), firsts)
                                 + nn.functional.cross_entropy(heads["second"](states), seconds))
                if args.order_weight:
                    columns, row_order = order_targets(firsts, seconds)
                    states = _normed(outputs.hidden_states[order_layer][rows, positions])
                    relation_loss = relation_loss + args.order_weight * (
                        nn.functional.cross_entropy(heads["columns"](states), columns)
                        + nn.functional.cross_entropy(heads["rows"](states), row_order))
            if len(opt["rows"]):
                states = _normed(outputs.hidden_states[option_layer][opt["rows"], opt["positions"]])
                option_loss = nn.functional.cross_entropy(heads["option"](states), opt["correct"])
        loss = outputs.loss + args.relation_weight * relation_loss + args.option_weight * option_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        text_kl = torch.zeros(())
        if text is not None:  # a second backward: the shapes batch's graph is freed before this one is built
            windows = text.batch(step, args.text_batch)
            with torch.no_grad(), peft_model.disable_adapter(), mixed_precision(precision):
                reference = peft_model(input_ids=windows).logits
            with mixed_precision(precision):
                text_kl = kl_to_reference(peft_model(input_ids=windows).logits, reference)
            (args.text_kl_weight * text_kl).backward()
        torch.nn.utils.clip_grad_norm_(lora_params + list(projector.parameters()), 1.0)
        optimizer.step()
        progress.set_postfix(loss=f"{outputs.loss.item():.3f}", rel=f"{relation_loss.item():.3f}",
                             opt=f"{option_loss.item():.3f}", kl=f"{text_kl.item():.3f}", crowd=crowd)
        if step % args.eval_every == 0 or step == args.steps:
            accuracy = first_token_accuracy(peft_model, processor, val, dtype=precision)
            log({"stage": 2, "step": step, "minutes": round((time.time() - started) / 60, 1),
                 "answer_loss": round(outputs.loss.item(), 4), "relation_loss": round(relation_loss.item(), 4),
                 "option_loss": round(option_loss.item(), 4), "text_kl": round(text_kl.item(), 4),
                 "held_out_text_perplexity": text_perplexity(peft_model, held_out_text, precision),
                 "val_first_token_accuracy": accuracy})
            trainable = {n: p for n, p in peft_model.state_dict().items()
                         if "lora_" in n or "multi_modal_projector" in n}
            torch.save({"model": trainable, "heads": heads.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step}, state_file)
            save_parts(out, peft_model.get_base_model(), lora_factors(peft_model), _parts_meta(args, step))
    return peft_model


def _normed(states: torch.Tensor) -> torch.Tensor:
    """Heads read RMS-normalised states: a pretrained LM's residual stream has a few huge dimensions."""
    states = states.float()
    return states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + 1e-6)


def _parts_meta(args, step: int) -> dict:
    return {"trained_steps": step, "rank": args.rank,
            "train_args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for parts.safetensors, parts.json and the log")
    parser.add_argument("--lm-source", default="auto", choices=["auto", "wheel", "hub"],
                        help="where SmolLM2 comes from (default: the cached wheel, else the hub)")
    parser.add_argument("--align-steps", type=int, default=600, help="stage 1 steps (batch --align-batch scenes)")
    parser.add_argument("--align-batch", type=int, default=128)
    parser.add_argument("--align-lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=1500, help="stage 2 steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank on every LM linear layer")
    parser.add_argument("--lr", type=float, default=1e-3, help="LoRA (and auxiliary heads) learning rate")
    parser.add_argument("--projector-lr", type=float, default=0.0,
                        help="stage 2 projector learning rate (default 0: frozen after stage 1; see instruction_tune)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--curriculum-steps", type=int, default=200,
                        help="steps over which the distractor cap ramps from 0 to 6")
    parser.add_argument("--relation-weight", type=float, default=1.0)
    parser.add_argument("--option-weight", type=float, default=1.0)
    parser.add_argument("--position-weight", type=float, default=0.5,
                        help="weight of the row/column words' embedding in each image token's stage-1 target "
                             "(0: content words only, the first recipe)")
    parser.add_argument("--family-weights", default="spatial=3,count=2,compositional=2",
                        help="stage-2 sampling weight per question family, e.g. spatial=3,count=2 (others 1)")
    parser.add_argument("--order-weight", type=float, default=1.0,
                        help="weight of the column/row order targets of two-object questions (0: none)")
    parser.add_argument("--text-kl-weight", type=float, default=0.5,
                        help="weight of the KL to the untuned LM on prose windows (0: no text term)")
    parser.add_argument("--text-batch", type=int, default=2, help="prose windows per step for the KL term")
    parser.add_argument("--text-length", type=int, default=128, help="tokens per prose window")
    parser.add_argument("--init-lora", type=Path, default=None,
                        help="a parts folder whose LoRA factors start stage 2 (e.g. the shipped parts)")
    parser.add_argument("--data-offset", type=int, default=0,
                        help="stage-2 step k trains on the batch of step k + OFFSET: a run continuing from "
                             "--init-lora sets it to the earlier runs' steps so it sees only new samples")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--val-size", type=int, default=300)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bfloat16",
                        help="autocast of stage 2 and the evaluations (the recipe: bfloat16; float32 turns it off, "
                             "much faster on CPUs without bfloat16 units)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue stage 2 from OUT/resume.pt")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "train_log.jsonl"

    def log(entry: dict) -> None:
        tqdm.write(json.dumps(entry))
        with log_file.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    from shortlvlm.testbeds.smol.model import build_model, build_processor
    from shortlvlm.testbeds.smol.source import load_smollm2

    language_model, tokenizer, source = load_smollm2(args.lm_source)
    processor = build_processor(tokenizer)
    model = build_model(language_model, processor)
    model.requires_grad_(False)
    started = time.time()
    stage1 = out / "stage1.pt"
    if args.resume and stage1.is_file():
        model.load_state_dict(torch.load(stage1, weights_only=True), strict=False)
    else:
        log({"lm_source": source, "baseline": first_token_accuracy(model, processor,
                                                                    make_split("calibration", 120, start=10**6),
                                                                    dtype=PRECISIONS[args.precision])})
        align(model, processor, args, log)
        keep = {n: p for n, p in model.state_dict().items() if "vision_tower" in n or "multi_modal_projector" in n}
        torch.save(keep, stage1)
        log({"stage": 1, "minutes": round((time.time() - started) / 60, 2),
             "after_stage1": first_token_accuracy(model, processor, make_split("calibration", 120, start=10**6),
                                                  dtype=PRECISIONS[args.precision])})
    instruction_tune(model, processor, args, log, out)
    log({"done": True, "minutes": round((time.time() - started) / 60, 1)})


if __name__ == "__main__":
    main()
