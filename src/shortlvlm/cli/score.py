"""`shortlvlm score`: rank decoder layers on calibration data; write a reusable plan."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from shortlvlm.cli.flags import given_flags
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.cli.method import add_method_options, calibration_from_args, method_from_args, method_of
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.placement import Layerwise
from shortlvlm.jobs.score import run_score
from shortlvlm.jobs.source import Architecture, Loading


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="rank decoder layers on calibration data; write a reusable plan",
        description="Run the calibration set through MODEL once (one pass per removed layer with "
        "--iterative), score every decoder layer with --method, and write the plan (scores and "
        "removal order) to --out plus a bar chart beside it (.png). `shortlvlm prune --plan` then "
        "prunes any ratio from it without scoring again.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--max-ratio", type=open_fraction, default=None,
                   help="with --iterative or --method sleb (one pass per removed layer and trial): how far to "
                   "rank (fraction of layers, default 0.5)")
    add_method_options(p, scp=False)
    add_model_options(p, layerwise=True)
    p.set_defaults(func=run)


def open_fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a fraction strictly between 0 and 1 (got '{text}')") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"takes a fraction strictly between 0 and 1 (got {value:g})")
    return value


def run(args: argparse.Namespace) -> int:
    """Score every decoder layer on calibration data and write the plan (removal order) as JSON."""
    scorer, _ = method_from_args(args, method_of(args))
    if args.max_ratio is not None and not scorer.needs_count:
        raise ShortLVLMError("--max-ratio bounds the scorers whose ranking depends on the count "
                             "(--iterative, sleb, tis-loss, angular); "
                             f"{scorer.name} ranks every layer in one go: drop --max-ratio")
    out = Path(args.out)
    plan = run_score(source_from_args(args), out, scorer=scorer, method=method_of(args),
                     calibration=calibration_from_args(args), max_ratio=args.max_ratio or 0.5,
                     overwrite=args.overwrite)
    order = plan.params["removal_order"]
    print(f"{plan.params['score_meaning']}")
    for layer in range(plan.num_layers_before):
        rank = order.index(layer) + 1 if layer in order else "-"
        print(f"  layer {layer:3d}  score {plan.layer_scores[layer]: .5f}  removal rank {rank}")
    print(f"removal order: {order}")
    plot = out.with_suffix(".png")
    print(f"wrote {out} and {plot}; prune from it with: {prune_command(args, out)}")
    return 0


def prune_command(args: argparse.Namespace, plan: Path) -> str:
    """The `prune --plan` command for this score run: the same model, loading and calibration flags (a compensation
    is measured on the calibration set the plan was scored on), with R and DIR left to fill in."""
    words = ["shortlvlm", "prune", args.model, "--plan", str(plan), "--ratio", "R", "--out", "DIR"]
    for options in (Calibration, Loading, Architecture):
        words += given_flags(options, args)
    if args.layerwise:
        words += ["--layerwise", *given_flags(Layerwise, args)]
    return shlex.join(words)
