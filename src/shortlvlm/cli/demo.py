"""`shortlvlm demo`: the main job on the bundled toy LVLM, with a report."""

from __future__ import annotations

import argparse

from shortlvlm.cli.flags import add_options, options_from_args
from shortlvlm.jobs.demo import DemoRequest, run_demo


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the bundled toy LVLM, with a report",
        description="1) Self-check: a tiny random model of every supported architecture is saved, "
        "loaded back through the code a real checkpoint takes, pruned, saved and verified. "
        "2) `shortlvlm compare` on the bundled toy LVLM: every method (the default tis-loss+lstsq, the paper's "
        "short-lvlm and the baselines) removes 10/20/30% of its layers using the bundled calibration set and is "
        "evaluated on the shapes benchmark; the default method at 30% is also written as a verified checkpoint. "
        "Writes demo_report.md/.json, compare/ (results, plans, plot) and toy-tis-loss-lstsq-30/ to --out.",
    )
    add_options(p, DemoRequest)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune and verify a tiny model of every supported architecture, then compare the methods on the toy."""
    return run_demo(options_from_args(DemoRequest, args))
