"""`shortlvlm eval`: answer a benchmark with a model and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shortlvlm.cli.flags import DeprecatedName, positive_count
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.data.benchmarks import NAMES, mmbench, shapes
from shortlvlm.jobs.eval import run_eval


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a model on a benchmark",
        description="Answer a benchmark's questions with greedy decoding (the model's chat template, "
        "batched with left padding) and score them with the benchmark's official metric. "
        "`shapes` is the toy task (generated, no --data needed); `easy-vqa` reads the installed easy-vqa "
        "package's data when --data is not given; the others read the benchmark's "
        "official local layout from --data. Answers are saved as they come (beside --out); if the run is "
        "killed, the same command continues where it stopped.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--bench", required=True, choices=NAMES)
    p.add_argument("--data", default=None,
                   help="the benchmark's folder (not needed for shapes, nor for easy-vqa when the easy-vqa package "
                        "is installed)")
    p.add_argument("--limit", type=int, default=None,
                   help=f"answer only the first N questions (shapes: {shapes.LIMIT_HELP})")
    p.add_argument("--eval-batch-size", type=positive_count, default=16, help="generation batch size (default: 16)")
    p.add_argument("--batch-size", dest="eval_batch_size", type=positive_count, action=DeprecatedName,
                   new="--eval-batch-size", why="--batch-size is the calibration batch in prune, score and compare")
    p.add_argument("--lenient", action="store_true",
                   help="read answers leniently ('B.', '(b)', an option's text, normalised short answers) instead "
                   "of exactly as the official scripts do; the results say \"parser\": \"lenient\" and are not "
                   "comparable with published numbers")
    p.add_argument("--mmbench-policy", choices=mmbench.POLICIES, default="exact",
                   help="MMBench answers its rules cannot read (e.g. 'The answer is A'), which the official "
                   "evaluator gives a GPT judge: 'exact' (default) counts them wrong, as VLMEvalKit without a "
                   "judge; 'lmms-eval' takes the letter lmms-eval's offline extraction finds, as its "
                   "mmbench_en_dev_static task. The results say \"mmbench_policy\"")
    p.add_argument("--out", required=True, help="results JSON (metrics and per-sample answers)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Answer a benchmark with a model and write metrics and per-sample answers."""
    metrics = run_eval(source_from_args(args), args.bench, Path(args.out), data=args.data, limit=args.limit,
                       batch_size=args.eval_batch_size, overwrite=args.overwrite, lenient=args.lenient,
                       mmbench_policy=args.mmbench_policy)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.out}")
    return 0
