"""The method flags `score` and `prune` share: --method, the calibration set, and every scorer's options."""

from __future__ import annotations

import argparse

from shortlvlm.cli.flags import add_options, options_from_args
from shortlvlm.compensation import COMPENSATION_NAMES, COMPENSATIONS, Compensation
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.methods import DEFAULT_METHOD, METHODS, resolve_method
from shortlvlm.scoring import SCORERS, Scorer

METHOD_HELP = (
    "layer-selection rule: tis-loss+lstsq (default: tis-loss scoring whose loss passes apply each trial's bridge, "
    "a least-squares bridge over each cut; the best measured on smol-llava, README 'Which method'); "
    "short-lvlm = the Short-LVLM paper's method, tis-cosine scoring + scp compensation; tis-loss (token-aware "
    "cosine shortlist, answer-loss passes decide); tis-cosine (Short-LVLM's scorer alone); block-influence "
    "(ShortGPT); angular (Gromov et al., best contiguous block); sleb (greedy, re-evaluated after each removal); "
    "taylor (Taylor+, Shortened LLaMA); ppl (Shortened LLaMA); laco (LaCo: walks down from the top, collapsing "
    "layers into the one below while the last layer's output stays similar, with its merge); last; random "
    "(seeded). tis-loss, sleb, ppl and taylor measure the loss on the calibration answers")


def add_method_options(parser: argparse.ArgumentParser, *, scp: bool) -> None:
    group = parser.add_argument_group("method")
    group.add_argument("--method", default=None, choices=sorted(METHODS), help=METHOD_HELP)
    add_options(group, Calibration)
    seen: set[str] = set()
    for scorer in SCORERS.values():
        add_options(group, scorer, seen)
    if scp:
        group.add_argument("--compensation", default=None, choices=list(COMPENSATION_NAMES),
                           help="gap compensation: scp (Short-LVLM's subspace edit), lstsq (ReplaceMe's "
                           "least-squares bridge), cosine (its cosine-fitted bridge; on smol-llava's default 30%% cut "
                           "it answered 30%% right where lstsq answered 89%%: check it on deep cuts), magnitude "
                           "(Prune&Comp's "
                           "magnitude rescaling), laco (LaCo's layer merge, no calibration data), "
                           "none (default: lstsq for tis-loss+lstsq, scp for short-lvlm, "
                           "laco for laco, none for the others)")
        for compensation in COMPENSATIONS.values():
            add_options(group, compensation)


def method_of(args: argparse.Namespace) -> str:
    """The --method given, else the default recipe (tis-loss+lstsq)."""
    return args.method or DEFAULT_METHOD


def method_from_args(args: argparse.Namespace, method: str, compensation: str | None = None
                     ) -> tuple[Scorer, Compensation | None]:
    """`method`'s scorer with the flags' options, and the compensation with its flags (None without one).

    The compensation is --compensation if given, else `compensation` (a plan's), else the method's default.
    """
    scorer_class, compensation = resolve_method(method, getattr(args, "compensation", None) or compensation)
    scorer = options_from_args(scorer_class, args)
    chosen = {name: options_from_args(cls, args) for name, cls in COMPENSATIONS.items()}  # all checked
    return scorer, chosen.get(compensation)


def calibration_from_args(args: argparse.Namespace) -> Calibration:
    return options_from_args(Calibration, args)
