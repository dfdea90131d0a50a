"""Choosing compensation defaults on held-out selection questions, never on the test split.

    .venv/bin/python benchmarks/compensation_selection.py --model smol-llava \
        --plan benchmarks/results/compare_smol_v4_all/plans/tis-loss.json --counts 9,6,12,3 \
        --settings "none;scp;lstsq[ridge=0.001];lstsq[ridge=0.01];lstsq[ridge=0.1];lstsq[ridge=1]" \
        [--select 300] [--num-samples 64] [--out benchmarks/results] [--suffix _tis-loss]

The plan's ranking (scored once, e.g. by `compare`) fixes the removed layers at each count; each
compensation setting (`compare`'s `+COMPENSATION[OPTIONS]` syntax, or `none`) prunes a fresh load
of the model on the model's default calibration set (the bundled shapes samples for toy and
smol-llava), and the result is evaluated on the selection split: shapes questions from the
calibration split starting at index 100000 (disjoint from the calibration samples and from the
test split; the split tis_loss_selection.py uses). Statistics are measured once per (count,
tokens) and reused across ridges through the prune job's stage cache, as a rerun would. Resumable:
finished cells in the JSON are kept. Writes compensation_selection_<model><suffix>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from toy_removal_ceiling import SELECT_START, accuracy, selection_split

from shortlvlm import load
from shortlvlm.data.calibration_set import Calibration, calibration_set
from shortlvlm.jobs.compare_spec import parse_methods
from shortlvlm.plan import Plan
from shortlvlm.pruning import prune
from shortlvlm.resume import StageCache


def compensation_of(setting: str):
    """'none', 'scp', 'lstsq[ridge=0.1]' -> the options object (compare's parser: one syntax)."""
    return parse_methods(f"last+{setting}")[0].make_compensation()


def table(results: dict) -> list[str]:
    counts = sorted({int(c) for row in results["cells"].values() for c in row})
    lines = [
        "| setting | " + " | ".join(f"{c} layers" for c in counts) + " | mean |",
        "|---|" + "---|" * (len(counts) + 1),
    ]
    for setting, row in results["cells"].items():
        values = [row.get(str(c), {}).get("accuracy") for c in counts]
        done = [v for v in values if v is not None]
        mean = f"{sum(done) / len(done):.1f}" if len(done) == len(counts) else "-"
        lines.append(
            f"| {setting} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in values) + f" | {mean} |"
        )
    return lines


def write(results: dict, path: Path) -> None:
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    cfg = results["config"]
    lines = [
        f"# Compensation settings on {cfg['model']}'s selection split",
        "",
        "Made by (each command adds the cells it lacks):",
        "",
        *(f"    {c}" for c in cfg["commands"]),
        "",
        f"Removed layers: the first N of `{cfg['plan']}`'s removal order {cfg['removal_order']}. "
        f"Calibration: {cfg['num_samples']} samples of {cfg.get('calib') or 'the model' + chr(39) + 's default set'} "
        f"(hash {cfg['calibration'][:12]}). "
        f"Evaluated on {cfg['select']} shapes questions of the calibration split from index {SELECT_START} "
        f"(never the test split). Unpruned: {results['unpruned']:.1f}%.",
        "",
        *([cfg["note"], ""] if cfg.get("note") else []),
        "## Accuracy % (selection split)",
        "",
        *table(results),
        "",
        "## Share of the gap left on the calibration tokens (least-squares bridges; 1 = as without one)",
        "",
    ]
    families = sorted({f for row in results["cells"].values() for c in row.values() for f in c["per_family"]})
    lines += [
        "",
        "## Per question family (selection split, accuracy %)",
        "",
        "| setting | layers | " + " | ".join(families) + " |",
        "|---|---|" + "---|" * len(families),
    ]
    for setting, row in results["cells"].items():
        for count, cell in sorted(row.items(), key=lambda kv: int(kv[0])):
            per = cell["per_family"]
            lines.append(
                f"| {setting} | {count} | "
                + " | ".join(f"{per[f]:.1f}" if f in per else "-" for f in families)
                + " |"
            )
    lines.append("")
    for setting, row in results["cells"].items():
        for count, cell in sorted(row.items(), key=lambda kv: int(kv[0])):
            left = [f"{e['removed']}: {e['gap_left']:.3f}" for e in cell["report"] if "gap_left" in e]
            if left:
                lines.append(f"- {setting}, {count} layers: " + ", ".join(left))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="toy")
    parser.add_argument(
        "--plan", required=True, help="a scored plan (plans/METHOD.json of a comparison, or score's)"
    )
    parser.add_argument("--counts", default="9,6,12,3")
    parser.add_argument(
        "--settings",
        default="none;scp;lstsq[ridge=0.01];lstsq[ridge=0.1]",
        help="';'-separated compensation settings",
    )
    parser.add_argument("--select", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument(
        "--calib", default=None, help="calibration file (default: the model's default set), e.g. a "
        "families-only set made by `python -m shortlvlm.testbeds.toy.calibration --families ...` for a transfer study"
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--suffix", default="")
    args = parser.parse_args()
    settings = [s.strip() for s in args.settings.split(";") if s.strip()]
    compensations = {s: compensation_of(s) for s in settings}  # every setting checked before any load
    counts = [int(c) for c in args.counts.split(",")]
    plan = Plan.load(args.plan)
    path = Path(args.out) / f"compensation_selection_{args.model}{args.suffix}"
    results = (
        json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else None
    )
    calib = calibration_set(Calibration(source=args.calib, num_samples=args.num_samples), args.model)
    samples = selection_split(args.select)
    command = "python benchmarks/compensation_selection.py " + " ".join(
        f"--{k.replace('_', '-')} {v!r}"
        if isinstance(v, str) and (";" in v or "[" in v)
        else f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
    )
    if results is not None and results["config"]["calibration"] != calib.hash:
        raise SystemExit(
            f"{path.with_suffix('.json')} was measured on calibration {results['config']['calibration'][:12]}, "
            f"this run's is {calib.hash[:12]}: give another --suffix"
        )
    if results is None:
        model, processor = load(args.model)
        results = {
            "config": {
                "model": args.model,
                "plan": args.plan,
                "removal_order": plan.params["removal_order"],
                "num_samples": len(calib.samples),
                "calibration": calib.hash,
                "calib": args.calib,
                "select": args.select,
                "commands": [command],
            },
            "unpruned": accuracy(model, processor, samples)[0],
            "cells": {},
        }
    commands = results["config"].setdefault("commands", [results["config"].pop("command", command)])
    if command not in commands:
        commands.append(command)
    with tempfile.TemporaryDirectory() as scratch:
        for count in counts:
            for setting in settings:
                if str(count) in results["cells"].get(setting, {}):
                    continue
                compensation = compensations[setting]
                tokens = getattr(compensation, "tokens", None) or getattr(compensation, "tis", None)
                cache = StageCache(
                    Path(scratch) / f"{count}-{compensation and compensation.name}-{tokens}", announce=False
                )
                model, processor = load(args.model)
                started = time.perf_counter()
                model, pruned = prune(
                    model,
                    processor,
                    count / plan.num_layers_before,
                    plan=plan,
                    compensation=compensation,
                    calibration=calib,
                    cache=cache,
                )
                seconds = time.perf_counter() - started
                acc, families = accuracy(model, processor, samples)
                results["cells"].setdefault(setting, {})[str(count)] = {
                    "removed": pruned.removed_layers,
                    "accuracy": acc,
                    "per_family": families,
                    "report": pruned.params.get("compensation_report", []),
                    "prune_seconds": round(seconds, 2),
                    "statistics_reused": "lstsq" in cache.reused or "scp" in cache.reused,
                }
                print(f"{setting} at {count}: {acc:.1f} ({seconds:.1f} s)", flush=True)
                write(results, path)
    write(results, path)
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
