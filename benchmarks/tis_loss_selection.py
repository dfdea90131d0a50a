"""Choosing tis-loss's defaults on held-out selection questions, never on the test split.

    .venv/bin/python benchmarks/tis_loss_selection.py [--model toy] [--select 300] [--counts 2,3,5,6]
        [--rechecks 0,1,2,3] [--pool-extras 0.5] [--full-steps 0] [--num-samples 256] [--out benchmarks/results]

For each (recheck, pool_extra, full_steps) setting, `tis-loss` ranks the layers on the calibration set (the
model's default set: the bundled shapes samples for toy and smol-llava) at the largest count, as
`compare` does, and each prefix of its order is removed and evaluated on a selection split:
shapes questions from the calibration split starting at index 100000 (disjoint from the
calibration samples and from the test split, the same split as toy_removal_ceiling.py). Loss
passes and the decoder layers they compute (per calibration batch, with loss_scoring_cost.py's
counter; SLEB's count at the largest count beside it) are counted, not timed (timing belongs to a
quiet, side-by-side run). Writes
tis_loss_selection_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from loss_scoring_cost import count_layer_runs  # decoder layers really computed, as the cost benchmark counts
from toy_removal_ceiling import SELECT_START, accuracy, selection_split  # the same selection split

from shortlvlm import drop_layers, get_adapter, load
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.pruning import Provenance, score
from shortlvlm.scoring import TISLoss


def layer_share(row: dict) -> str:
    """Decoder layers computed per calibration batch and their share of SLEB's (rows from before counting: -)."""
    if "decoder_layers" not in row:
        return "-"
    return f"{row['decoder_layers']} ({100 * row['decoder_layers'] / row['sleb_decoder_layers']:.0f}%)"


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
    num_layers = get_adapter(model).num_layers
    # SLEB's decoder layers at the largest count: step k runs L-k-1 layers in each of its L-k passes
    sleb_layers = sum((num_layers - k) * (num_layers - k - 1) for k in range(max(counts)))
    for extra, recheck, full in grid:
        scorer = TISLoss(recheck=recheck, pool_extra=extra, full_steps=full)
        layer_runs, handles = count_layer_runs(get_adapter(model))
        try:
            plan = score(model, processor, scorer=scorer, calibration=Calibration(num_samples=args.num_samples),
                         num_remove=max(counts), provenance=Provenance(source=args.model))
        finally:
            for handle in handles:
                handle.remove()
        batches = -(-(args.num_samples or 256) // Calibration().batch_size)
        order = plan.params["removal_order"]
        selected = {}
        for count in counts:
            pruned = copy.deepcopy(model)
            drop_layers(pruned, order[:count])
            selected[count] = accuracy(pruned, processor, samples)[0]
        row = {"recheck": recheck, "pool_extra": extra, "full_steps": full, "order": order,
               "pool": plan.params["pool"], "loss_passes": plan.params["loss_passes"],
               "decoder_layers": sum(layer_runs) // batches, "sleb_decoder_layers": sleb_layers,
               "selection_accuracy": selected, "mean": sum(selected.values()) / len(selected)}
        print(json.dumps(row))
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "suffix"))
    result = {
        "command": f"benchmarks/tis_loss_selection.py {flags}" + (f" --suffix {args.suffix}" if args.suffix else ""),
        "selection": {"split": "calibration", "start": SELECT_START, "size": args.select},
        "unpruned": unpruned, "rows": rows}
    name = f"tis_loss_selection_{args.model}{args.suffix}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# tis-loss settings on the selection split ({args.model})", "",
             f"Command: `.venv/bin/python {result['command']}`", "",
             f"{args.select} shapes questions of the calibration split from index {SELECT_START} (not the test "
             f"split). Unpruned: {unpruned:.1f}%.", "",
             "| recheck | pool extra | full steps | " + " | ".join(f"{c} layers" for c in counts)
             + " | mean | loss passes | decoder layers (vs SLEB) |",
             "|---|---|---|" + "---|" * len(counts) + "---|---|---|"]
    for row in rows:
        cells = " | ".join(f"{row['selection_accuracy'][c]:.1f}" for c in counts)
        lines.append(f"| {row['recheck']} | {row['pool_extra']} | {row['full_steps']} | {cells} | {row['mean']:.2f} | "
                     f"{row['loss_passes']} | {layer_share(row)} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
