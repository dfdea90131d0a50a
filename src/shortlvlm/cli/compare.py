"""`shortlvlm compare`: several pruning methods at several ratios, evaluated on one benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from shortlvlm.cli.flags import add_options, options_from_args
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.data.benchmarks import NAMES, load_benchmark, shapes
from shortlvlm.data.calibration_set import Calibration, check_answers, read_calibration
from shortlvlm.eval.generate import check_can_answer
from shortlvlm.jobs.compare import run_compare
from shortlvlm.jobs.compare_draws import calibration_draws, run_compare_draws, summary_table
from shortlvlm.jobs.compare_report import markdown_table
from shortlvlm.jobs.compare_spec import DEFAULT_METHODS, CompareError, parse_methods, parse_ratios
from shortlvlm.options import positive_count
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
        "extend it (finished cells and rankings are reused).",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated settings METHOD[OPTIONS]+COMPENSATION[OPTIONS]: append +scp, +lstsq or "
                   "+none to override a method's compensation; bracketed NAME=VALUE lists set the scorer's and "
                   "the compensation's options by their field names (as in `help(shortlvlm.LstSq)`), e.g. "
                   "tis-loss[full_steps=2]+lstsq[ridge=0.1] (one scorer setting per scorer per comparison; "
                   f"default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--ratios", default="0.1,0.2,0.3", help="fractions of layers to remove (default: 0.1,0.2,0.3)")
    p.add_argument("--bench", default=NAMES[0], choices=NAMES, help=f"benchmark (default: {NAMES[0]})")
    p.add_argument("--data", default=None, help="the benchmark's folder (not needed for shapes)")
    p.add_argument("--limit", type=int, default=None,
                   help=f"evaluate on the first N questions only (shapes: {shapes.LIMIT_HELP})")
    p.add_argument("--eval-batch-size", type=positive_count, default=16, help="generation batch size (default: 16)")
    p.add_argument("--out", required=True,
                   help="output directory (resumed, or extended by new methods and ratios, if it holds the same "
                        "comparison)")
    p.add_argument("--overwrite", action="store_true", help="start over: discard what --out holds")
    group = p.add_argument_group("calibration (shared by every method)")
    group.add_argument("--calib-draws", type=positive_count, default=1,
                       help="run the comparison on N disjoint calibration draws and report each cell as mean ± sd "
                            "(OUT/draw-K/ per draw, OUT/summary.md): a file's draws are consecutive slices of "
                            "--num-samples (default: the file split in N); toy and smol-llava without --calib use "
                            "the bundled set, then generated draws of as many samples (default: 1, no spread)")
    add_options(group, Calibration)
    add_options(group, RandomLayers)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score, prune and evaluate every method at every ratio; write results JSON, table and plot."""
    methods = parse_methods(args.methods)
    ratios = parse_ratios(args.ratios)
    calibration = options_from_args(Calibration, args)
    seed = options_from_args(RandomLayers, args).seed
    samples = load_benchmark(args.bench, args.data, args.limit)  # bad data fails before any load
    source = source_from_args(args)
    needs_data = any(m.needs_calibration for m in methods)
    if args.calib_draws > 1 and not needs_data:
        raise CompareError("--calib-draws compares calibration draws, but none of --methods reads calibration data")
    if args.calib_draws > 1:
        draws = calibration_draws(calibration, source.name, args.calib_draws, Path(args.out))
    else:
        draws = [read_calibration(calibration, source.name)] if needs_data else [None]
    for calib in draws:
        for method in methods:
            if SCORERS[method.scorer].needs_answers:
                check_answers(calib, method.label)
    skeleton = source.skeleton()
    check_can_answer(skeleton, source.adapter(skeleton))
    for ratio in ratios:
        layers_to_remove(ratio, source.adapter(skeleton))
    del skeleton
    if args.calib_draws > 1:
        summary = run_compare_draws(source, args.out, draws=draws, methods=methods, ratios=ratios, bench=args.bench,
                                    samples=samples, data=args.data, eval_batch_size=args.eval_batch_size, seed=seed,
                                    overwrite=args.overwrite)
        print(summary_table(summary))
        print(f"wrote {Path(args.out) / 'summary.json'}, summary.md, accuracy_vs_ratio.png and one comparison per "
              f"draw ({Path(args.out) / 'draw-0'}, ...)")
        return 0
    data = run_compare(source, args.out, methods=methods, ratios=ratios, bench=args.bench, samples=samples,
                       calibration=draws[0], data=args.data, eval_batch_size=args.eval_batch_size, seed=seed,
                       overwrite=args.overwrite)
    print(markdown_table(data))
    print(f"wrote {Path(args.out) / 'results.json'}, results.md and accuracy_vs_ratio.png")
    return 0
