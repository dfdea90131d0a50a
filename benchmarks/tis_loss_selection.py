"""Choosing tis-loss's defaults on held-out selection questions, never on the test split.

    .venv/bin/python benchmarks/tis_loss_selection.py [--model toy] [--select 300] [--counts 2,3,5,6]
        [--rechecks 0,1,2,3] [--pool-extras 0.5] [--full-steps 0] [--num-samples 256] [--out benchmarks/results]

For each (recheck, pool_extra, full_steps) setting, `tis-loss` ranks the layers on the calibration set (the
model's default set: the bundled shapes samples for toy and smol-llava) at the largest count, as
`compare` does, and each prefix of its order is removed and evaluated on a selection split:
shapes questions from the calibration split starting at index 100000 (disjoint from the
calibration samples and from the test split, the same split as toy_removal_ceiling.py). Loss
passes are counted, not timed (timing belongs to a quiet, side-by-side run). Writes
tis_loss_selection_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from toy_removal_ceiling import SELECT_START, accuracy, selection_split  # the same selection split

from shortlvlm import drop_layers, load
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.pruning import score
from shortlvlm.scoring import TISLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--select", type=int, default=300)
    parser.add_argument("--counts", default="2,3,5,6")
    parser.add_argument("--rechecks", default="0,1,2,3")
    parser.add_argument("--pool-extras", default="0.5")
    parser.add_argument("--full-steps", default="0")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--suffix", default="", help="appended to the result files' names")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    model, processor = load(args.model)
    samples = selection_split(args.select)
    unpruned = accuracy(model, processor, samples)[0]
    rows = []
    grid = [(extra, recheck, full) for extra in [float(x) for x in args.pool_extras.split(",")]
            for recheck in [int(r) for r in args.rechecks.split(",")]
            for full in [int(f) for f in args.full_steps.split(",")]]
    for extra, recheck, full in grid:
        scorer = TISLoss(recheck=recheck, pool_extra=extra, full_steps=full)
        plan = score(model, processor, scorer=scorer, calibration=Calibration(num_samples=args.num_samples),
                     num_remove=max(counts), source=args.model, progress=False)
        order = plan.params["removal_order"]
        selected = {}
        for count in counts:
            pruned = copy.deepcopy(model)
            drop_layers(pruned, order[:count])
            selected[count] = accuracy(pruned, processor, samples)[0]
        row = {"recheck": recheck, "pool_extra": extra, "full_steps": full, "order": order,
               "pool": plan.params["pool"], "loss_passes": plan.params["loss_passes"],
               "selection_accuracy": selected, "mean": sum(selected.values()) / len(selected)}
        print(json.dumps(row))
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "suffix"))
    result = {"command": f"benchmarks/tis_loss_selection.py {flags}" + (f" --suffix {args.suffix}" if args.suffix else ""),
        "selection": {"split": "calibration", "start": SELECT_START, "size": args.select},
        "unpruned": unpruned, "rows": rows}
    name = f"tis_loss_selection_{args.model}{args.suffix}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# tis-loss settings on the selection split ({args.model})", "",
             f"Command: `.venv/bin/python {result['command']}`", "",
             f"{args.select} shapes questions of the calibration split from index {SELECT_START} (not the test "
             f"split). Unpruned: {unpruned:.1f}%.", "",
             "| recheck | pool extra | full steps | " + " | ".join(f"{c} layers" for c in counts)
             + " | mean | loss passes |",
             "|---|---|---|" + "---|" * len(counts) + "---|---|"]
    for row in rows:
        cells = " | ".join(f"{row['selection_accuracy'][c]:.1f}" for c in counts)
        lines.append(f"| {row['recheck']} | {row['pool_extra']} | {row['full_steps']} | {cells} | {row['mean']:.2f} | {row['loss_passes']} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
