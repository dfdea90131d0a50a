"""`shortlvlm compare`: several pruning methods at several ratios, evaluated on one benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from shortlvlm.cli.flags import add_options, options_from_args
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.data.benchmarks import load_benchmark
from shortlvlm.data.calibration_set import Calibration, check_answers, read_calibration
from shortlvlm.eval.generate import check_can_answer
from shortlvlm.jobs.compare import run_compare
from shortlvlm.jobs.compare_draws import calibration_draws, run_compare_draws, summary_table
from shortlvlm.jobs.compare_report import markdown_table
from shortlvlm.jobs.compare_spec import CompareError, CompareRequest
from shortlvlm.scoring import SCORERS, RandomLayers
from shortlvlm.selection import layers_to_remove


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="run several pruning methods at several ratios and compare them on a benchmark",
        description="Score MODEL's layers once per method on the same calibration data, prune a fresh copy "
        "at every ratio (with the method's compensation), evaluate each on --bench, and write --out/"
        "results.json, results.md (score and retention per method x ratio, scoring time) and "
        "accuracy_vs_ratio.png. Plans are kept in --out/plans. Progress is saved after every step: "
        "run the same command again to resume a killed comparison, or with more --methods or --ratios to "
        "extend it (finished cells and rankings are reused). A ranking is made once, for the largest ratio, "
        "and each ratio's cell is what `prune --plan OUT/plans/METHOD.json --ratio R` writes from it. "
        "For tis-loss (its candidate pool grows with the count) and laco (its thresholds and last "
        "merge depend on it) that can differ from `prune --ratio R`, which ranks for R alone; "
        "--rank-per-ratio ranks those two for every ratio (OUT/plans/METHOD@R.json), at one search per ratio.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    add_options(p, CompareRequest)
    p.add_argument("--out", required=True,
                   help="output directory (resumed, or extended by new methods and ratios, if it holds the same "
                        "comparison)")
    group = p.add_argument_group("calibration (shared by every method)")
    add_options(group, Calibration)
    add_options(group, RandomLayers)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score, prune and evaluate every method at every ratio; write results JSON, table and plot."""
    request = options_from_args(CompareRequest, args, seed=options_from_args(RandomLayers, args).seed)
    methods = request.method_specs()
    calibration = options_from_args(Calibration, args)
    samples = load_benchmark(request.bench, request.data, request.limit)  # bad data fails before any load
    source = source_from_args(args)
    needs_data = any(m.needs_calibration for m in methods)
    if request.calib_draws > 1 and not needs_data:
        raise CompareError("--calib-draws compares calibration draws, but none of --methods reads calibration data")
    if request.calib_draws > 1:
        draws = calibration_draws(calibration, source.name, request.calib_draws, Path(args.out))
    else:
        draws = [read_calibration(calibration, source.name)] if needs_data else [None]
    for calib in draws:
        for method in methods:
            if SCORERS[method.scorer].needs_answers:
                check_answers(calib, method.label)
    skeleton = source.skeleton()
    check_can_answer(skeleton, source.adapter(skeleton))
    for ratio in request.ratios:
        layers_to_remove(ratio, source.adapter(skeleton))
    del skeleton
    if request.calib_draws > 1:
        summary = run_compare_draws(source, args.out, request, samples, draws)
        print(summary_table(summary))
        print(f"wrote {Path(args.out) / 'summary.json'}, summary.md, accuracy_vs_ratio.png and one comparison per "
              f"draw ({Path(args.out) / 'draw-0'}, ...)")
        return 0
    data = run_compare(source, args.out, request, samples, draws[0])
    print(markdown_table(data))
    print(f"wrote {Path(args.out) / 'results.json'}, results.md and accuracy_vs_ratio.png")
    return 0
