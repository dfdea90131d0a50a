"""`compare --calib-draws N`: one comparison on N disjoint calibration draws, reported as mean ± sd.

A pruning number measured on one calibration draw is partly a measurement of that draw (smol-llava:
`tis-loss` at 30% scored 66.0, 52.2 and 49.3 on three draws of 64 samples; docs/testbed.md). So
every cell is run on each draw and reported with its spread:

- Draw k of a calibration file is its usable samples k·n .. (k+1)·n - 1, with n = --num-samples
  (default: the file's usable samples // N); `--calib FILE --calib-offset k·n --num-samples n`
  gives the same draw to any command.
- Without --calib (toy, smol-llava), draw 0 is the bundled set and draw k ≥ 1 is written by the
  generator of the bundled set's split from index DRAW_STRIDE·k on (what `python -m
  shortlvlm.testbeds.toy.calibration --start` writes) into OUT/draws/draw-k/, n samples each (default: as
  many as the bundled set holds).
- Each draw is an ordinary, resumable comparison in OUT/draw-k/ (its own scores, plans and table);
  OUT/summary.json, summary.md and accuracy_vs_ratio.png hold every cell's mean, standard
  deviation (n - 1) and minimum over the draws, rewritten whenever the command finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from pathlib import Path

from shortlvlm.data.calibration import load_calibration
from shortlvlm.data.calibration_set import Calibration, CalibrationSet, read_calibration
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.jobs.compare import run_compare
from shortlvlm.jobs.compare_report import ranking_note, ratio_key, ratio_plot
from shortlvlm.jobs.compare_spec import CompareError, CompareRequest
from shortlvlm.jobs.source import ModelSource

logger = logging.getLogger(__name__)

DRAW_STRIDE = 20000  # bundled-split indices between generated draws (the bundled set is 0..255)
BUNDLED = ("toy", "smol-llava")  # models whose calibration comes from the bundled shapes generator


def draw_dir(out: Path, index: int) -> Path:
    return Path(out) / f"draw-{index}"


def calibration_draws(options: Calibration, model_name: str, draws: int, out: Path) -> list[CalibrationSet]:
    """The N disjoint draws `options` names (read and checked, before any model loads)."""
    if draws < 2:
        raise CompareError(f"--calib-draws takes 2 or more draws (got {draws}); without it one draw is used")
    if options.offset:
        raise CompareError("--calib-offset picks one draw; --calib-draws picks its own: drop --calib-offset")
    if Path(out).exists() and not Path(out).is_dir():
        raise CompareError(f"--out {out} is an existing file; --out must be a directory path: choose another --out")
    if (options.source is None and model_name in BUNDLED) or options.source == "toy":
        return _generated_draws(options, draws, Path(out))
    if options.source is None:
        read_calibration(options, model_name)  # the missing --calib's own message
    available = len(load_calibration(options.source, model_name=model_name,
                                     allow_outside_root=options.allow_outside_root,
                                     image_folder=options.image_folder, split=options.split))
    size = options.num_samples or available // draws
    if size < 1 or size * draws > available:
        raise CompareError(
            f"--calib-draws {draws} of {options.num_samples or 'equal'} sample(s) need {max(size, 1) * draws} usable "
            f"samples; {options.source} has {available}: give fewer draws or a smaller --num-samples")
    return [read_calibration(dataclasses.replace(options, offset=k * size, num_samples=size), model_name)
            for k in range(draws)]


def _generated_draws(options: Calibration, draws: int, out: Path) -> list[CalibrationSet]:
    from shortlvlm.testbeds.toy.calibration import write_calibration_set

    if (options.num_samples or 0) > DRAW_STRIDE:
        raise CompareError(f"--num-samples {options.num_samples} overlaps the next draw (draws start {DRAW_STRIDE} "
                           "apart)")
    sets = [read_calibration(dataclasses.replace(options, source=None), "toy")]  # the bundled set, read once
    size = len(sets[0].samples)
    for k in range(1, draws):
        folder = out / "draws" / f"draw-{k}"
        path = folder / "calibration.jsonl"
        if not path.exists():  # written once (a folder without the file is a torn write); a rerun reads it again
            write_calibration_set(folder, size, start=DRAW_STRIDE * k, overwrite=True)
        sets.append(read_calibration(dataclasses.replace(options, source=str(path), num_samples=size)))
    return sets


def run_compare_draws(source: ModelSource, out: str | Path, request: CompareRequest, samples: list,
                      draws: list[CalibrationSet]) -> dict:
    """The comparison on every draw (OUT/draw-k/, each resumable), then the summary over the draws."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, calibration in enumerate(draws):
        logger.info(f"calibration draw {k + 1}/{len(draws)} ({len(calibration.samples)} samples, hash "
            f"{calibration.hash[:12]}) -> {draw_dir(out, k)}")
        results.append(run_compare(source, draw_dir(out, k), request, samples, calibration))
    summary = summarize(results)
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n", overwrite=True)
    note = ranking_note(summary)  # each draw ranks once, for the largest ratio, as one comparison does
    write_text_atomically(out / "summary.md", summary_table(summary) + "\n" + (f"\n{note}" if note else ""),
                          overwrite=True)
    ratio_plot(summary, out / "accuracy_vs_ratio.png", draws=len(draws))
    return summary


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def summarize(results: list[dict]) -> dict:
    """Per method and ratio: the score on each draw, its mean, sd (n - 1), min and max; the removed layers."""
    config = results[0]["config"]
    unpruned = [r["unpruned"]["score"] for r in results]
    cells: dict[str, dict[str, dict]] = {}
    for label in config["methods"]:
        for ratio in config["ratios"]:
            rows = [r["cells"].get(label, {}).get(ratio_key(ratio)) for r in results]
            if any(row is None for row in rows):
                continue
            cells.setdefault(label, {})[ratio_key(ratio)] = {
                **_spread([row["score"] for row in rows]), "removed_layers": [row["removed_layers"] for row in rows]}
    return {"config": {**{k: v for k, v in config.items() if k != "calibration"},
                       "calibration_draws": [r["config"]["calibration"] for r in results]},
            "unpruned": _spread(unpruned), "cells": cells}


def summary_table(summary: dict) -> str:
    """mean ± sd (retention of the mean unpruned score) and the worst draw, per method x ratio."""
    config = summary["config"]
    ratios, base = config["ratios"], summary["unpruned"]["mean"]
    draws = len(config["calibration_draws"])
    lines = [f"Mean ± sd over {draws} disjoint calibration draws (retention of the unpruned {base:.1f}; "
             "worst draw in brackets).", "",
             f"| method | {' | '.join(f'{r:.0%}' for r in ratios)} |", "|---" * (len(ratios) + 1) + "|"]
    for label in config["methods"]:
        cells = []
        for ratio in ratios:
            cell = summary["cells"].get(label, {}).get(ratio_key(ratio))
            cells.append("…" if cell is None else
                         f"{cell['mean']:.1f} ± {cell['sd']:.1f} ({100 * cell['mean'] / base:.0f}%) "
                         f"[{cell['min']:.1f}]")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)
