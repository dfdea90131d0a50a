"""Accuracy of a pruned checkpoint on the selection split, the questions defaults are chosen on.

    .venv/bin/python benchmarks/selection_accuracy.py PRUNED_DIR --out RESULT.json [--select 300]

The selection split is shapes questions from the calibration split starting at index 100000 (disjoint
from every calibration draw used here and from the test split; the split compensation_selection.py and
tis_loss_selection.py use). Writes {"folder", "selection_accuracy", "per_family", "seconds"} and prints
the accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from toy_removal_ceiling import accuracy, selection_split

from shortlvlm import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a pruned checkpoint (or any model name `load` takes)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--select", type=int, default=300, help="selection questions (default 300)")
    args = parser.parse_args()
    started = time.time()
    model, processor = load(args.folder)
    score, families = accuracy(model, processor, selection_split(args.select))
    result = {"folder": str(args.folder), "selection_accuracy": score, "per_family": families,
              "seconds": round(time.time() - started, 1)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(args.folder, score)


if __name__ == "__main__":
    main()
