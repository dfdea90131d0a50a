"""`shortlvlm score`: rank decoder layers on calibration data; write a reusable plan."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from shortlvlm.cli.flags import add_options, given_flags, options_from_args
from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.cli.method import add_method_options, calibration_from_args, method_from_args, method_of
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.io.placement import Layerwise
from shortlvlm.jobs.score import ScoreRequest, run_score
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
    add_options(p, ScoreRequest)
    add_method_options(p, scp=False)
    add_model_options(p, layerwise=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score every decoder layer on calibration data and write the plan (removal order) as JSON."""
    scorer, _ = method_from_args(args, method_of(args))
    out = Path(args.out)
    plan = run_score(source_from_args(args), out, options_from_args(ScoreRequest, args), scorer=scorer,
                     method=method_of(args), calibration=calibration_from_args(args))
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
