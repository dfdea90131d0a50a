"""How a bridge fitted on calibration data without some question families does on them (issue 31's transfer).

    .venv/bin/python benchmarks/transfer_fit.py --layers 2,4,6,7,9,13,14,15,25 --setting lstsq \
        [--calib FAM/calibration.jsonl] [--num-samples 256] [--fit-tokens all|image|prompt|context] \
        [--select 300] --out CELL.json

Removes the listed layers of smol-llava (fixed, so only the fit varies), bridges them with the compensation
setting (`compare`'s `+COMPENSATION[OPTIONS]` syntax, or `none`) fitted on the calibration file (default: the
bundled set), and scores the selection split (shapes questions from index 100000 of the calibration split;
never the test split). `--fit-tokens image` fits on the image tokens only: in this prompt the image precedes
the question, so those tokens' streams cannot depend on the question family. `--fit-tokens prompt` fits on
the real tokens before the answer (image and question, up to the position that predicts the answer),
`context` on those less that last position. These are diagnostics, not product options: they replace the
compensation collectors' token selection for this process only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from compensation_selection import compensation_of
from toy_removal_ceiling import accuracy, selection_split

from shortlvlm import load
from shortlvlm.data.calibration_set import Calibration, calibration_set
from shortlvlm.importance import ImportanceAwareCollector
from shortlvlm.pruning import prune_listed


def select_tokens(choose) -> None:
    """Every collector without TIS importance selects `choose(batch)` ([B, T] bool) instead of every real token."""
    def selected(self):
        return self.importance.mask() if self.importance is not None else choose(self.batch)

    ImportanceAwareCollector.selected_tokens = selected


def fit_on_image_tokens() -> None:
    """The fits use the real image tokens only."""
    select_tokens(lambda batch: batch.image & batch.valid)


def fit_before_the_answer(include_last: bool) -> None:
    """The fits use the real tokens before each row's first answer token: the image and the question, with
    (`prompt`) or without (`context`) the last real token before the answer, the position whose stream predicts
    the answer's first token."""
    def before_answer(batch):
        valid, answer = batch.valid, batch.answer
        positions = torch.arange(valid.shape[1]).expand_as(valid)
        first = torch.where(answer, positions, valid.shape[1]).min(dim=1, keepdim=True).values
        prompt = valid & (positions < first)
        if include_last:
            return prompt
        last = torch.where(prompt, positions, -1).max(dim=1, keepdim=True).values
        return prompt & (positions < last)

    select_tokens(before_answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smol-llava")
    parser.add_argument("--layers", required=True, help="comma-separated layers to remove (original indices)")
    parser.add_argument("--setting", default="lstsq", help="compensation setting, e.g. 'lstsq[prior=identity]'")
    parser.add_argument("--calib", default=None, help="calibration file (default: the model's bundled set)")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--fit-tokens", choices=("all", "image", "prompt", "context"), default="all")
    parser.add_argument("--select", type=int, default=300)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    compensation = compensation_of(args.setting)
    layers = [int(x) for x in args.layers.split(",")]
    if args.fit_tokens == "image":
        fit_on_image_tokens()
    elif args.fit_tokens in ("prompt", "context"):
        fit_before_the_answer(include_last=args.fit_tokens == "prompt")
    calib = calibration_set(Calibration(source=args.calib, num_samples=args.num_samples), args.model)
    model, processor = load(args.model)
    started = time.perf_counter()
    model, pruned = prune_listed(model, processor, layers, compensation=compensation, calibration=calib)
    seconds = time.perf_counter() - started
    acc, families = accuracy(model, processor, selection_split(args.select))
    result = {"command": "python benchmarks/transfer_fit.py " + " ".join(
                  f"--{k.replace('_', '-')} {v!r}" for k, v in vars(args).items() if v is not None),
              "calibration": calib.hash, "num_samples": len(calib.samples), "removed": pruned.removed_layers,
              "accuracy": acc, "per_family": families, "held_out_mean": (families["count"] + families["spatial"]) / 2,
              "prune_seconds": round(seconds, 1), "report": pruned.params.get("compensation_report", [])}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.setting} ({args.fit_tokens} tokens): {acc:.2f} {families}")


if __name__ == "__main__":
    main()
