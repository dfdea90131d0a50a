"""`shortlvlm demo`: the main job on the bundled default, with a report.

1. Self-check: a tiny model of every supported architecture is pruned, saved and verified.
2. `compare` on the toy LVLM: every method (the default tis-loss+lstsq, the paper's Short-LVLM, its
   scorer without SCP, tis-loss, ShortGPT's block influence, the angular block, SLEB, Taylor+, PPL,
   last, random) removes 10/20/30% of the decoder layers, all calibrated on the bundled toy
   calibration set, and each result is evaluated on the shapes benchmark; the default method at 30%
   (from the comparison's plan: no second scoring) is also written as a verified checkpoint.
The report (markdown, JSON and a plot) and the checkpoint land in --out atomically.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from shortlvlm.data.benchmarks import load_benchmark, shapes
from shortlvlm.data.benchmarks.base import BenchSample
from shortlvlm.data.calibration_set import Calibration, CalibrationSet, read_calibration
from shortlvlm.errors import OutputExistsError
from shortlvlm.io.atomic import rename_noreplace
from shortlvlm.io.output import claim_output, follow_umask, writing
from shortlvlm.io.save import check_output_dir
from shortlvlm.jobs.checkpoint import write_checkpoint
from shortlvlm.jobs.compare import run_compare
from shortlvlm.jobs.compare_report import markdown_table as compare_table
from shortlvlm.jobs.compare_spec import DEFAULT_METHODS, CompareRequest
from shortlvlm.jobs.selfcheck import markdown_table, prune_one
from shortlvlm.jobs.source import Loading, ModelSource
from shortlvlm.log import progress_bar, progress_bars
from shortlvlm.methods import DEFAULT_METHOD
from shortlvlm.options import Options, is_bool, option, options
from shortlvlm.plan import Plan
from shortlvlm.pruning import Provenance, prune
from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES

RATIOS = (0.1, 0.2, 0.3)
TOY = ModelSource("toy", Loading(dtype="float32"))
CHECKPOINT = f"toy-{DEFAULT_METHOD.replace('+', '-')}-30"


@options
class DemoRequest(Options):
    """Where the demo writes its report, and how many questions and calibration samples it uses."""

    out: str = option("shortlvlm-demo", help="output directory")
    limit: int = option(shapes.DEFAULT_SIZE, help=f"shapes questions per evaluation: {shapes.LIMIT_HELP}")
    num_samples: int | None = option(None, help="calibrate on the first N of the 256 bundled samples (default: all)")
    overwrite: bool = option(False, check=is_bool, help="replace --out if it exists")


def toy_comparison(work: Path, samples: list[BenchSample], calibration: CalibrationSet) -> dict:
    """Every method at 10/20/30% on the toy LVLM (shapes), plus a verified 30% checkpoint of the default method."""
    with progress_bars(False):  # the comparison's lines are the demo's progress; its bars would be hundreds
        request = CompareRequest(methods=DEFAULT_METHODS, ratios=RATIOS, bench="shapes", eval_batch_size=50)
        data = run_compare(TOY, work / "compare", request, samples, calibration)
    model, processor = TOY.load()
    scored = Plan.load(work / "compare" / "plans" / f"{DEFAULT_METHOD}.json")  # the comparison's ranking
    model, plan = prune(model, processor, RATIOS[-1], calibration=calibration, plan=scored,
                        provenance=Provenance(source="toy"))
    write_checkpoint(model, processor, plan, work / CHECKPOINT)
    return data


def run_demo(request: DemoRequest) -> int:
    """Run the demo into `request.out` (written to a temporary directory, moved into place at the end)."""
    from transformers.utils import logging as hf_logging

    out, overwrite, limit = Path(request.out), request.overwrite, request.limit

    check_output_dir(out, overwrite)
    samples = load_benchmark("shapes", limit=limit)  # a bad --limit or --num-samples fails before the self-check
    calibration = read_calibration(Calibration(num_samples=request.num_samples), TOY.name)
    hf_logging.disable_progress_bar()  # our bars instead of two per checkpoint
    with claim_output(out, overwrite=overwrite):
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            with writing(out):
                archs = [prune_one(t, work) for t in progress_bar(TINY_MODEL_TYPES, desc="self-check", unit="arch")]
                shutil.rmtree(work / "sources")
                toy = toy_comparison(work, samples, calibration)
                report = {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                          "architectures": archs, "toy": toy}
                (work / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
                text = ("# shortlvlm demo\n\n## Toy LVLM: shapes accuracy (retention) after removing 10/20/30% of "
                        f"the layers, every method on the same {toy['config']['calibration']['num_samples']} "
                        f"calibration samples ({limit} questions)\n\n"
                        f"{compare_table(toy)}\n\n![accuracy versus ratio](compare/accuracy_vs_ratio.png)\n\n"
                        f"The default method ({DEFAULT_METHOD}) at 30%, saved and verified: `{CHECKPOINT}/`.\n\n"
                        "## Self-check: every supported architecture pruned, saved, reloaded and verified\n\n"
                        f"{markdown_table(archs)}")
                (work / "demo_report.md").write_text(text)
                follow_umask(work)  # mkdtemp made it 0700
                if out.exists() and overwrite:
                    shutil.rmtree(out)
                try:
                    rename_noreplace(work, out)
                except FileExistsError:
                    raise OutputExistsError(f"{out} appeared while the demo ran (another program wrote it); "
                                            "it was kept. Pass --overwrite to replace it") from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    print(compare_table(toy))
    print(f"\nself-check: {len(archs)} architectures pruned and verified")
    print(f"report: {out / 'demo_report.md'} (plot: {out / 'compare' / 'accuracy_vs_ratio.png'})")
    return 0
