"""The score job: rank every decoder layer once and write the plan (JSON) and a bar chart of the scores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shortlvlm.data.calibration_set import Calibration, check_answers, read_calibration
from shortlvlm.errors import ShortLVLMError
from shortlvlm.importance import check_tis_layers
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.io.output import claim_output, writing
from shortlvlm.io.save import check_output_file
from shortlvlm.jobs.source import ModelSource
from shortlvlm.options import Options, is_bool, open_fraction, option, optional_open_fraction, options
from shortlvlm.plan import Plan
from shortlvlm.pruning import Provenance, score
from shortlvlm.report import layer_scores_plot
from shortlvlm.scoring import Scorer
from shortlvlm.selection import layers_to_remove

logger = logging.getLogger(__name__)


DEFAULT_MAX_RATIO = 0.5


@options
class ScoreRequest(Options):
    """How far the score job ranks, and whether it may replace its plan; the scorer and calibration are apart."""

    overwrite: bool = option(False, check=is_bool, help="replace --out if it exists")
    max_ratio: float | None = option(None, parse=open_fraction, check=optional_open_fraction,
                                     help="with --iterative or --method sleb (one pass per removed layer and trial): "
                                          f"how far to rank (fraction of layers, default {DEFAULT_MAX_RATIO})")


def run_score(source: ModelSource, out: Path, request: ScoreRequest, *, scorer: Scorer, method: str,
              calibration: Calibration = Calibration()) -> Plan:
    """Score `source` with `scorer`; scorers that need the count rank up to `request.max_ratio` of the layers."""
    out, overwrite = Path(out), request.overwrite
    if request.max_ratio is not None and not scorer.needs_count:
        raise ShortLVLMError("--max-ratio bounds the scorers whose ranking depends on the count "
                             "(--iterative, sleb, tis-loss, angular); "
                             f"{scorer.name} ranks every layer in one go: drop --max-ratio")
    max_ratio = DEFAULT_MAX_RATIO if request.max_ratio is None else request.max_ratio
    check_output_file(out, overwrite, "plan", "plan.json")
    skeleton = source.skeleton()  # what the config tells, checked before any weights load
    check_tis_layers(source.adapter(skeleton).num_layers, scorer)
    if scorer.needs_count:
        layers_to_remove(max_ratio, source.adapter(skeleton))
    del skeleton
    calib = read_calibration(calibration, source.name) if scorer.needs_data else None
    if scorer.needs_answers:
        check_answers(calib, method)
    with claim_output(out, overwrite=overwrite):
        model, processor = source.load()
        adapter = source.adapter(model)
        num_remove = layers_to_remove(max_ratio, adapter) if scorer.needs_count else None
        plan = score(model, processor, scorer=scorer, calibration=calib, num_remove=num_remove, adapter=adapter,
                     provenance=Provenance(method=method, source=source.name))
        plot = out.with_suffix(".png")
        try:  # the plot first: a plan lands only with its plot
            with writing(plot):
                layer_scores_plot(plan, plot)
            write_text_atomically(out, json.dumps(plan.to_dict(), indent=2) + "\n", overwrite=overwrite)
        except BaseException:
            plot.unlink(missing_ok=True)
            raise
    return plan
