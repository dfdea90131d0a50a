"""Train the toy LVLM on the synthetic shapes task: `python -m shortlvlm.testbeds.toy.train --out DIR`.

Recipe (docs/design.md §9): objects aligned with the patch grid; loss on the answer tokens plus
a dense auxiliary target (each image token predicts its cell's colour and shape) so the vision
side learns from the first step; a higher learning rate on the vision tower and projector; and
vision features standardised before the projector with running statistics, folded exactly
into the projector's first linear layer at save time so the checkpoint stays a plain LLaVA;
grounding targets on the question words that name objects (what and where they are), and on the
last prompt token of spatial and neighbour questions (the two cells the answer depends on).
The defaults are the shipped checkpoint's recipe (about 43 minutes on 2 CPU cores).
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

from shortlvlm.testbeds.toy.data import (
    COLORS,
    GRID,
    LETTERS,
    NEIGHBOURS,
    SHAPES,
    ToySample,
    content_class,
    make_split,
    mentions,
)
from shortlvlm.testbeds.toy.model import build_model, build_processor

COLOR_LIST, NUM_CELL_CLASSES = list(COLORS), 1 + len(SHAPES) * len(COLORS)  # empty + each object


def conversation(sample: ToySample) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]


def encode_batch(processor, samples: list[ToySample], with_answers: bool) -> dict[str, torch.Tensor]:
    """Processor batch of prompts (left-padded); with_answers appends answer + </s> and labels them."""
    prompts = [processor.apply_chat_template(conversation(s), add_generation_prompt=True) for s in samples]
    batch = processor(images=[s.image() for s in samples], text=prompts, return_tensors="pt", padding=True)
    if not with_answers:
        return dict(batch)
    tok = processor.tokenizer
    answers = torch.tensor([[*tok.convert_tokens_to_ids(s.answer.split()), tok.eos_token_id] for s in samples])
    input_ids = torch.cat([batch["input_ids"], answers], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -answers.shape[1]:] = answers
    mask = torch.cat([batch["attention_mask"], torch.ones_like(answers)], dim=1)
    return {"input_ids": input_ids, "attention_mask": mask, "pixel_values": batch["pixel_values"], "labels": labels}


def word_targets(model, processor, targets: torch.Tensor) -> torch.Tensor:
    """Per image token: the sum of the LM's input embeddings of its colour and shape words (0 if empty).

    Pulling projected image tokens towards the words that describe them lets attention match
    "red circle" in the question with the red circle's token from the first layer on; without it
    the vision side learned every cell yet questions stayed at the text-only level (measured).
    """
    tok = processor.tokenizer
    color_ids = torch.tensor(tok.convert_tokens_to_ids(COLOR_LIST))
    shape_ids = torch.tensor(tok.convert_tokens_to_ids(list(SHAPES)))
    table = model.get_input_embeddings().weight.detach()
    words = table[shape_ids].repeat_interleave(len(COLOR_LIST), 0) + table[color_ids].repeat(len(SHAPES), 1)
    words = torch.cat([torch.zeros(1, table.shape[1], device=table.device), words])  # class 0: empty cell
    return words[targets]


def grounding_targets(samples: list[ToySample], seq_len: int, tail: int) -> tuple[torch.Tensor, ...]:
    """(batch index, position, content class, cell) for each object a question names (data.mentions).

    Prompts end with `question ASSISTANT :` followed by `tail` answer tokens, one token per word.
    """
    rows, positions, contents, cells = [], [], [], []
    for row, sample in enumerate(samples):
        first_word = seq_len - tail - 2 - len(sample.question.split())
        for word, content, cell in mentions(sample):
            rows.append(row)
            positions.append(first_word + word)
            contents.append(content)
            cells.append(cell)
    return torch.tensor(rows), torch.tensor(positions), torch.tensor(contents), torch.tensor(cells)


def option_targets(samples: list[ToySample], seq_len: int, tail: int) -> tuple[torch.Tensor, ...]:
    """(batch index, position, is correct) for each option's shape word of multiple-choice questions."""
    rows, positions, correct = [], [], []
    for row, sample in enumerate(samples):
        if sample.meta["kind"] != "choice":
            continue
        words = sample.question.split()
        first_word = seq_len - tail - 2 - len(words)
        for letter, shape in zip(LETTERS, sample.meta["options"], strict=True):
            at = words.index(letter) + 2  # "A . square"
            if words[at] != shape:
                raise ValueError(f"option {letter} of {sample.id} is not followed by {shape!r}")
            rows.append(row)
            positions.append(first_word + at)
            correct.append(int(letter == sample.answer))
    return torch.tensor(rows), torch.tensor(positions), torch.tensor(correct)


def relation_targets(samples: list[ToySample], seq_len: int, tail: int) -> tuple[torch.Tensor, ...]:
    """(batch index, position, first cell, second cell) at the last prompt token of two-object questions.

    Spatial questions: the cells of the object asked about and of the reference object; neighbour
    (compositional) questions: the reference's cell and the cell the answer must be read from. The
    answer token is predicted from there, so it must gather both positions first.
    """
    rows, firsts, seconds = [], [], []
    for row, sample in enumerate(samples):
        meta, scene = sample.meta, sample.scene
        if meta["kind"] == "spatial":
            (a,) = scene.cells_where(color=meta["color"], shape=meta["shape"])
            (b,) = scene.cells_where(color=meta["ref_color"], shape=meta["ref_shape"])
        elif meta["kind"] == "neighbour":
            (a,) = scene.cells_where(color=meta["ref_color"], shape=meta["ref_shape"])
            dr, dc = NEIGHBOURS[meta["relation"]]
            b = (a[0] + dr, a[1] + dc)
        else:
            continue
        rows.append(row)
        firsts.append(a[0] * GRID + a[1])
        seconds.append(b[0] * GRID + b[1])
    positions = torch.full((len(rows),), seq_len - tail - 1)
    return torch.tensor(rows, dtype=torch.long), positions, torch.tensor(firsts), torch.tensor(seconds)


def cell_targets(samples: list[ToySample]) -> torch.Tensor:
    """Per image token (row-major cells): 0 for empty, else the object's content class."""
    targets = torch.zeros(len(samples), GRID * GRID, dtype=torch.long)
    for i, sample in enumerate(samples):
        for (row, col), obj in sample.scene.objects.items():
            targets[i, row * GRID + col] = content_class(obj)
    return targets


class VisionStandardizer(nn.Module):
    """Standardises vision features with running statistics, in training as in evaluation.

    Unlike BatchNorm, training also normalises with the running statistics (updated from each
    batch without gradient), so the function trained is the one evaluated and folded into the
    checkpoint; normalising with batch statistics instead left the evaluated model at chance
    while its training loss fell (measured).
    """

    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                flat = features.reshape(-1, features.shape[-1]).float()
                mean, var = flat.mean(0), flat.var(0)
                m = 1.0 if not self.initialised else self.momentum
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var, m)
                self.initialised.fill_(True)
        return (features - self.running_mean) * torch.rsqrt(self.running_var + self.eps)


def fold_standardizer(model, standardizer: VisionStandardizer) -> None:
    """Fold x -> (x - mean) / std into the projector's first linear layer (exact up to rounding)."""
    linear = model.model.multi_modal_projector.linear_1
    inv_std = torch.rsqrt(standardizer.running_var + standardizer.eps)
    with torch.no_grad():
        mean = standardizer.running_mean
        linear.bias.sub_(linear.weight @ (mean * inv_std))
        linear.weight.mul_(inv_std)


@torch.no_grad()
def teacher_forced_accuracy(model, processor, samples: list[ToySample], batch_size: int = 100) -> dict:
    """Accuracy of the first answer token predicted at the end of the prompt, per family."""
    model.eval()
    hits = defaultdict(list)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        batch = {k: v.to(model.device) for k, v in encode_batch(processor, chunk, with_answers=False).items()}
        logits = model(**batch).logits[:, -1]
        predicted = processor.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
        for sample, word in zip(chunk, predicted, strict=True):
            hits[sample.family].append(word == sample.answer.split()[0])
    model.train()
    result = {f: round(100 * sum(v) / len(v), 1) for f, v in hits.items()}
    result["overall"] = round(100 * sum(sum(v) for v in hits.values()) / len(samples), 1)
    return result


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    processor = build_processor()
    if args.init:  # continue from a saved toy checkpoint (its standardisation is already folded in)
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
    else:
        model = build_model(args.layers)
    model.to(device).train()
    dim = model.config.vision_config.hidden_size
    standardizer = VisionStandardizer(dim).to(device)
    projector = model.model.multi_modal_projector
    # A saved checkpoint has the standardisation folded into its projector already (the projector
    # takes raw features); standardising again on --init sent a trained model back to chance.
    hook = None if args.init else projector.register_forward_pre_hook(
        lambda module, inputs: (standardizer(inputs[0]),))
    captured = {}
    capture = projector.register_forward_hook(lambda module, inputs, output: captured.__setitem__("tokens", output))
    aux_head = nn.Linear(model.config.text_config.hidden_size, NUM_CELL_CLASSES)
    ground_head = nn.Linear(model.config.text_config.hidden_size, NUM_CELL_CLASSES)
    ground_cell_head = nn.Linear(model.config.text_config.hidden_size, GRID * GRID + 1)  # a cell, or absent
    position_head = nn.Linear(model.config.text_config.hidden_size, GRID * GRID)
    option_head = nn.Linear(model.config.text_config.hidden_size, 2)
    relation_heads = [nn.Linear(model.config.text_config.hidden_size, GRID * GRID) for _ in range(2)]
    heads = [aux_head, ground_head, ground_cell_head, position_head, option_head, *relation_heads]
    for head in heads:
        head.to(device)
    head_params = [p for head in heads for p in head.parameters()]
    vision_params = [*model.model.vision_tower.parameters(), *projector.parameters()]
    vision_ids = {id(p) for p in vision_params}
    text_params = [p for p in model.parameters() if id(p) not in vision_ids]
    optimizer = torch.optim.AdamW(
        [{"params": text_params, "lr": args.lr}, {"params": vision_params, "lr": args.lr * args.vision_lr_mult},
         {"params": head_params, "lr": args.lr * args.vision_lr_mult}],
        weight_decay=0.01, betas=(0.9, 0.98),
    )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    val = make_split("calibration", args.val_size, start=10**6)  # far from the calibration prefix
    log = {"args": vars(args), "evals": []}
    progress = tqdm(range(1, args.steps + 1), desc="train", unit="step")
    started = time.time()
    for step in progress:
        warm = min(1.0, step / args.warmup)
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps)))
        for index, (group, base) in enumerate(zip(optimizer.param_groups, base_lrs, strict=True)):
            # Fresh heads on a trained model: training only the heads first keeps their initial
            # random gradients out of the model (a precaution, not a measured necessity).
            frozen = step <= args.heads_only_steps and index < 2
            group["lr"] = 0.0 if frozen else base * warm * decay
        crowd = min(6, int(6 * (args.start_step + step) / max(1, args.curriculum_steps)))  # 0 at first
        offset = (args.start_step + step - 1) * args.batch_size  # fresh questions when continuing
        samples = make_split("train", args.batch_size, start=offset, crowd=crowd)
        batch = {k: v.to(device) for k, v in encode_batch(processor, samples, with_answers=True).items()}
        hidden_states = args.ground_weight > 0 or args.option_weight > 0 or args.relation_weight > 0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            outputs = model(**batch, output_hidden_states=hidden_states)
            answer_loss = outputs.loss
            ground_loss = torch.zeros((), device=device)
            if args.ground_weight > 0:  # the word naming an object predicts what that object is
                rows, positions, contents, named_cells = grounding_targets(
                    samples, batch["input_ids"].shape[1], tail=2)
                hidden = outputs.hidden_states[args.ground_layer][rows, positions].float()
                ground_loss = nn.functional.cross_entropy(ground_head(hidden), contents.to(device))
                if args.ground_cells:  # ... and where it is (spatial questions compare positions)
                    ground_loss = ground_loss + nn.functional.cross_entropy(
                        ground_cell_head(hidden), named_cells.to(device))
            tokens = captured["tokens"].reshape(len(samples), GRID * GRID, -1).float()
            cells = cell_targets(samples).to(device)
            aux_loss = nn.functional.cross_entropy(aux_head(tokens).flatten(0, 1), cells.flatten())
            # Each image token also says which cell it is, so position survives the word alignment.
            where = torch.arange(GRID * GRID, device=device).repeat(len(samples))
            aux_loss = aux_loss + nn.functional.cross_entropy(position_head(tokens).flatten(0, 1), where)
            occupied = cells > 0  # direction is what survives the LM's input RMSNorm
            align_loss = 1 - nn.functional.cosine_similarity(
                tokens[occupied], word_targets(model, processor, cells)[occupied], dim=-1).mean()
            option_loss = torch.zeros((), device=device)
            if args.option_weight > 0:  # each option's shape word says whether it is the right one
                rows, positions, correct = option_targets(samples, batch["input_ids"].shape[1], tail=2)
                if len(rows):
                    hidden = outputs.hidden_states[args.option_layer][rows, positions].float()
                    option_loss = nn.functional.cross_entropy(option_head(hidden), correct.to(device))
            relation_loss = torch.zeros((), device=device)
            if args.relation_weight > 0:  # the last prompt token gathers both positions a relation needs
                rows, positions, firsts, seconds = relation_targets(samples, batch["input_ids"].shape[1], tail=2)
                if len(rows):
                    hidden = outputs.hidden_states[args.relation_layer][rows, positions].float()
                    relation_loss = (nn.functional.cross_entropy(relation_heads[0](hidden), firsts.to(device))
                                     + nn.functional.cross_entropy(relation_heads[1](hidden), seconds.to(device)))
        loss = (answer_loss + args.aux_weight * aux_loss + args.align_weight * align_loss
                + args.ground_weight * ground_loss + args.option_weight * option_loss
                + args.relation_weight * relation_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        progress.set_postfix(crowd=crowd, loss=f"{answer_loss.item():.3f}", aux=f"{aux_loss.item():.3f}",
                             align=f"{align_loss.item():.4f}", ground=f"{ground_loss.item():.3f}",
                             relation=f"{relation_loss.item():.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            standardizer.eval()  # not a submodule of the model, so model.eval() does not reach it
            accuracy = teacher_forced_accuracy(model, processor, val)
            standardizer.train()
            entry = {"step": step, "minutes": round((time.time() - started) / 60, 1),
                     "answer_loss": round(answer_loss.item(), 4), "aux_loss": round(aux_loss.item(), 4),
                     "align_loss": round(align_loss.item(), 5), "ground_loss": round(ground_loss.item(), 4),
                     "relation_loss": round(relation_loss.item(), 4),
                     "val_accuracy": accuracy}
            log["evals"].append(entry)
            tqdm.write(json.dumps(entry))
    capture.remove()
    if hook is not None:
        hook.remove()
        fold_standardizer(model, standardizer)
    model.to("cpu").eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    log["final_val_accuracy_after_fold"] = teacher_forced_accuracy(model, processor, val)
    (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for the trained checkpoint")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--vision-lr-mult", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--aux-weight", type=float, default=1.0)
    parser.add_argument("--align-weight", type=float, default=0.5)
    parser.add_argument("--ground-weight", type=float, default=1.0,
                        help="weight of the grounding target (object-naming words predict that object)")
    parser.add_argument("--ground-cells", action=argparse.BooleanOptionalAction, default=True,
                        help="the grounding target also asks for the named object's cell (default: on)")
    parser.add_argument("--option-weight", type=float, default=1.0,
                        help="weight of the multiple-choice target (option words say if they are right)")
    parser.add_argument("--option-layer", type=int, default=None,
                        help="hidden state the option head reads (default: 3/4 of the depth)")
    parser.add_argument("--ground-layer", type=int, default=None,
                        help="hidden state the grounding head reads (default: half the depth)")
    parser.add_argument("--relation-weight", type=float, default=2.0,
                        help="weight of the relation target (the last prompt token of spatial and "
                             "neighbour questions predicts the two cells the answer depends on)")
    parser.add_argument("--relation-layer", type=int, default=None,
                        help="hidden state the relation heads read (default: 5/8 of the depth)")
    parser.add_argument("--curriculum-steps", type=int, default=1000,
                        help="steps over which the distractor cap ramps from 0 to 6")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--val-size", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads-only-steps", type=int, default=0,
                        help="train only the auxiliary heads for this many steps (use with --init)")
    parser.add_argument("--init", default=None, help="start from this saved toy checkpoint instead of scratch")
    parser.add_argument("--start-step", type=int, default=0,
                        help="offset into the training stream (use the previous run's steps with --init)")
    parser.add_argument("--device", default="cpu",
                        help="torch device to train on (the shipped checkpoint: cpu); cuda explores recipes faster")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (measure: often slower at this size)")
    args = parser.parse_args(argv)
    args.ground_layer = args.layers // 2 if args.ground_layer is None else args.ground_layer
    args.option_layer = 3 * args.layers // 4 if args.option_layer is None else args.option_layer
    args.relation_layer = 5 * args.layers // 8 if args.relation_layer is None else args.relation_layer
    log = train(args)
    print(json.dumps(log["final_val_accuracy_after_fold"]))


if __name__ == "__main__":
    main()
