"""`shortlvlm bench`: speed and memory of models side by side (e.g. unpruned vs pruned)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shortlvlm.cli.flags import add_options, options_from_args
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.jobs.bench import BenchRequest, run_bench_job
from shortlvlm.speed import bench_warnings, markdown_table, spread_lines

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure speed and memory of models side by side (e.g. unpruned vs pruned)",
        description="Load every MODEL, then time them interleaved in one process (A B A B ...) on one "
        "image + prompt at batch 1: prefill latency, decode tokens/s and benchmark-style samples/s (a "
        "fixed-length greedy answer, EOS ignored, so every model does the same work), plus peak memory. "
        "Prints medians over the rounds after warm-up with speedups against the first MODEL next to the "
        "ideal L0/L, the spread of every timing (quartiles, extremes), a warning when a timing is noisy or a "
        "speedup exceeds the ideal by more than the noise, and writes them (with every raw timing) to --out.",
    )
    p.add_argument("models", metavar="MODEL", nargs="+", help="hub ids, local model directories, or `toy`; "
                   "the first is the reference")
    p.add_argument("--out", required=True, help="results JSON")
    add_options(p, BenchRequest)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure several models' speed and memory interleaved in one process; write JSON, print a table."""
    sources = [source_from_args(args, name) for name in args.models]
    rows = run_bench_job(sources, Path(args.out), options_from_args(BenchRequest, args))
    print(markdown_table(rows))
    print("\n".join(["", "spread over the measured rounds:", *spread_lines(rows)]))
    for warning in bench_warnings(rows):
        logger.warning(warning)
    print(f"wrote {args.out}")
    return 0
