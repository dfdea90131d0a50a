"""`shortlvlm bench`: speed and memory of models side by side (e.g. unpruned vs pruned)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.jobs.bench import run_bench_job
from shortlvlm.speed import DEFAULT_PROMPT, bench_warnings, markdown_table, spread_lines

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
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--rounds", type=int, default=10, help="measured rounds per model (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default: 2)")
    p.add_argument("--answer-tokens", type=int, default=16, help="tokens generated per sample (default: 16)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"question asked (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--image", default=None, help="image file to ask about (default: a synthetic test pattern)")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure several models' speed and memory interleaved in one process; write JSON, print a table."""
    sources = [source_from_args(args, name) for name in args.models]
    rows = run_bench_job(sources, Path(args.out), rounds=args.rounds, warmup=args.warmup,
                         answer_tokens=args.answer_tokens, prompt=args.prompt, image=args.image,
                         overwrite=args.overwrite)
    print(markdown_table(rows))
    print("\n".join(["", "spread over the measured rounds:", *spread_lines(rows)]))
    for warning in bench_warnings(rows):
        logger.warning(warning)
    print(f"wrote {args.out}")
    return 0
