"""`shortlvlm eval`: answer a benchmark with a model and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shortlvlm.cli.flags import DeprecatedName, add_options, options_from_args
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.jobs.eval import EvalRequest, run_eval
from shortlvlm.options import positive_count


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
    add_options(p, EvalRequest)
    p.add_argument("--out", required=True, help="results JSON (metrics and per-sample answers)")
    p.add_argument("--batch-size", dest="eval_batch_size", type=positive_count, action=DeprecatedName,
                   new="--eval-batch-size", why="--batch-size is the calibration batch in prune, score and compare")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Answer a benchmark with a model and write metrics and per-sample answers."""
    metrics = run_eval(source_from_args(args), Path(args.out), options_from_args(EvalRequest, args))
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.out}")
    return 0
