"""How a bridge fitted on calibration data without some question families does on them (issue 31's transfer).

    .venv/bin/python benchmarks/transfer_fit.py --layers 2,4,6,7,9,13,14,15,25 --setting lstsq \
        [--calib FAM/calibration.jsonl] [--num-samples 256] [--fit-tokens all|image] [--select 300] --out CELL.json

Removes the listed layers of smol-llava (fixed, so only the fit varies), bridges them with the compensation
setting (`compare`'s `+COMPENSATION[OPTIONS]` syntax, or `none`) fitted on the calibration file (default: the
bundled set), and scores the selection split (shapes questions from index 100000 of the calibration split;
never the test split). `--fit-tokens image` fits on the image tokens only: in this prompt the image precedes
the question, so those tokens' streams cannot depend on the question family. That is a diagnostic, not a
product option: it replaces the compensation collectors' token selection for this process only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from compensation_selection import compensation_of
from toy_removal_ceiling import accuracy, selection_split

from shortlvlm import load
from shortlvlm.data.calibration_set import Calibration, calibration_set
from shortlvlm.importance import ImportanceAwareCollector
from shortlvlm.pruning import prune_listed


def fit_on_image_tokens() -> None:
    """Every collector without TIS importance selects the real image tokens instead of every real token."""
    def image_tokens(self):
        return self.importance.mask() if self.importance is not None else self.batch.image & self.batch.valid

    ImportanceAwareCollector.selected_tokens = image_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smol-llava")
    parser.add_argument("--layers", required=True, help="comma-separated layers to remove (original indices)")
    parser.add_argument("--setting", default="lstsq", help="compensation setting, e.g. 'lstsq[prior=identity]'")
    parser.add_argument("--calib", default=None, help="calibration file (default: the model's bundled set)")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--fit-tokens", choices=("all", "image"), default="all")
    parser.add_argument("--select", type=int, default=300)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    compensation = compensation_of(args.setting)
    layers = [int(x) for x in args.layers.split(",")]
    if args.fit_tokens == "image":
        fit_on_image_tokens()
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
