"""Every compensation side by side, from one `shortlvlm compare` folder (issue 31, item 4).

    .venv/bin/python benchmarks/compensation_table.py benchmarks/results/compare_toy_compensations \
        [--selections tis-loss,sleb] [--family-ratio 0.3]

Reads OUT/results.json and writes OUT/compensations.md: per selection, the score of each
compensation (none, scp, lstsq, cosine, magnitude, laco; whichever the comparison holds) at every
ratio; the per-family scores at --family-ratio; and what each compensation cost in the prune step
(`prune_seconds` of the cell: the statistics passes, the fit and the merge, on top of the scoring,
which the compensations of one selection share). Nothing is measured here: the numbers are the
comparison's own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COMPENSATIONS = ("none", "scp", "lstsq", "cosine", "magnitude", "laco")


def label(selection: str, compensation: str) -> str:
    return selection if compensation == "none" else f"{selection}+{compensation}"


def per_ratio_rows(cells: dict, selections: list[str], ratios: list[str], shown) -> list[str]:
    """One table row per (selection, compensation) the comparison holds: shown(cell) per ratio, "-" where missing."""
    rows = []
    for selection in selections:
        for compensation in COMPENSATIONS:
            row = cells.get(label(selection, compensation))
            if row is not None:
                values = ["-" if row.get(r) is None else shown(row[r]) for r in ratios]
                rows.append(f"| {selection} | {compensation} | " + " | ".join(values) + " |")
    return rows


def tables(results: dict, selections: list[str], family_ratio: str) -> list[str]:
    cells, unpruned = results["cells"], results["unpruned"]
    ratios = sorted({r for row in cells.values() for r in row}, key=float)
    lines = [f"Unpruned: {unpruned['score']:.1f}. Scoring time is shared by a selection's rows "
             "(`results.json`, `scoring`).", ""]
    lines += ["## Score (retention) per ratio", "",
              "| selection | compensation | " + " | ".join(f"{float(r):.0%}" for r in ratios) + " |",
              "|---|---|" + "---|" * len(ratios)]
    lines += per_ratio_rows(cells, selections, ratios,
                            lambda cell: f"{cell['score']:.1f} ({cell['score'] / unpruned['score']:.0%})")
    families = list(unpruned["metrics"].get("per_family", {}))
    if families:
        lines += ["", f"## Per question family at {float(family_ratio):.0%}", "",
                  "| selection | compensation | " + " | ".join(families) + " | all |",
                  "|---|---|" + "---|" * (len(families) + 1),
                  "| unpruned | - | " + " | ".join(f"{unpruned['metrics']['per_family'][f]:.1f}" for f in families)
                  + f" | {unpruned['score']:.1f} |"]
        for selection in selections:
            for compensation in COMPENSATIONS:
                cell = cells.get(label(selection, compensation), {}).get(family_ratio)
                if cell is None:
                    continue
                per = cell["metrics"]["per_family"]
                lines.append(f"| {selection} | {compensation} | " + " | ".join(f"{per[f]:.1f}" for f in families)
                             + f" | {cell['score']:.1f} |")
    lines += ["", "## Prune step seconds per cell (statistics passes, fit, merge; the layers' removal included)", "",
              "Wall-clock seconds of the cells as they ran, on a machine other jobs may have shared: an order of "
              "magnitude, not a ratio measured side by side.", "",
              "| selection | compensation | " + " | ".join(f"{float(r):.0%}" for r in ratios) + " |",
              "|---|---|" + "---|" * len(ratios)]
    lines += per_ratio_rows(cells, selections, ratios, lambda cell: f"{cell['prune_seconds']:.1f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--selections", default="tis-loss,sleb")
    parser.add_argument("--family-ratio", default="0.3")
    args = parser.parse_args()
    results = json.loads((args.folder / "results.json").read_text())
    lines = [f"# Compensations compared: {results['config']['model']} on {results['config']['bench']}", "",
             f"From `{args.folder}/results.json` ({results['config']['num_questions']} questions, calibration "
             f"{results['config']['calibration']['num_samples']} samples, hash "
             f"{results['config']['calibration']['hash'][:12]}); written by `benchmarks/compensation_table.py`.", "",
             *tables(results, args.selections.split(","), args.family_ratio)]
    (args.folder / "compensations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
