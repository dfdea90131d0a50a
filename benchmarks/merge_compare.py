"""Merge `shortlvlm compare` outputs that ran side by side into one report.

    .venv/bin/python benchmarks/merge_compare.py OUT RESULTS_DIR [RESULTS_DIR ...] [--drop METHOD,...]

A long method (SLEB: hundreds of loss passes) can run in its own `compare` process on the other
CPU core while the rest run in another. This joins their results.json into OUT/results.json,
results.md and accuracy_vs_ratio.png (the same report `compare` writes). It refuses to merge runs
whose configuration differs in anything but the method list (model weights, benchmark, questions,
ratios, calibration hash), whose unpruned scores differ, or that share a method: the merged table
must be one comparison, not several stitched together. `--drop` names methods measured again
after a change to their defaults: each is kept only from the last folder that holds it (the newer
run) and left out of the earlier ones; the merged results.json lists what was replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from shortlvlm.jobs.compare_report import write_report
from shortlvlm.jobs.compare_results import write_json


def without(part: dict, methods: set[str]) -> dict:
    """`part` with the given methods' scoring and cells left out."""
    kept = [m for m in part["config"]["methods"] if m not in methods]
    return {**part, "config": {**part["config"], "methods": kept},
            "scoring": {m: v for m, v in part["scoring"].items() if m not in methods},
            "cells": {m: v for m, v in part["cells"].items() if m not in methods}}


def merge(parts: list[dict], drop: set[str] = frozenset()) -> dict:
    last = {method: i for i, part in enumerate(parts) for method in part["config"]["methods"] if method in drop}
    parts = [without(part, {m for m in drop if last.get(m) != i}) for i, part in enumerate(parts)]
    first = parts[0]
    same = {k: v for k, v in first["config"].items() if k != "methods"}
    merged = {"config": {**first["config"], "methods": []}, "scoring": {}, "unpruned": first["unpruned"], "cells": {}}
    for part in parts:
        config = {k: v for k, v in part["config"].items() if k != "methods"}
        if config != same:
            raise SystemExit(f"configurations differ: {config} against {same}")
        if part["unpruned"]["score"] != first["unpruned"]["score"]:
            raise SystemExit("the unpruned scores differ: not the same model or questions")
        shared = set(part["config"]["methods"]) & set(merged["config"]["methods"])
        if shared:
            raise SystemExit(f"methods measured twice: {sorted(shared)}")
        merged["config"]["methods"] += part["config"]["methods"]
        merged["scoring"].update(part["scoring"])
        merged["cells"].update(part["cells"])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("results", nargs="+", help="folders written by `shortlvlm compare --out`")
    parser.add_argument("--drop", default="",
                        help="comma-separated methods measured again: kept from the last folder holding each")
    args = parser.parse_args()
    drop = {m for m in args.drop.split(",") if m}
    out = Path(args.out)
    (out / "plans").mkdir(parents=True, exist_ok=True)
    parts = [json.loads((Path(d) / "results.json").read_text()) for d in args.results]
    merged = merge(parts, drop)
    merged["merged_from"] = [Path(d).name for d in args.results]
    merged["replaced"] = {m: f"kept from {Path(d).name}" for m in sorted(drop)
                          for d, part in zip(args.results, parts, strict=True) if m in part["config"]["methods"]}
    source = {m: d for d, part in zip(args.results, parts, strict=True) for m in part["config"]["methods"]}
    for method in merged["config"]["methods"]:
        shutil.copy2(Path(source[method]) / "plans" / f"{method}.json", out / "plans" / f"{method}.json")
    write_json(out / "results.json", merged)
    write_report(merged, out)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
