"""The prune job: every check that needs no weights first (on the skeleton), then load, prune, save and verify.

Either listed layers are removed, or `ratio` of them chosen by the method (tis-loss+lstsq by default).
Finished stages (scores, compensation statistics) are kept beside the output until it lands, so the same
job run again after an interruption resumes (shortlvlm.resume).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from shortlvlm.compensation import Compensation, compensation_needs_data
from shortlvlm.data.calibration_set import Calibration, check_answers, read_calibration
from shortlvlm.errors import OutputWriteError, ShortLVLMError
from shortlvlm.importance import check_tis_layers
from shortlvlm.io.fingerprint import weights_stamp
from shortlvlm.io.output import claim_output
from shortlvlm.io.save import check_output_dir
from shortlvlm.jobs.checkpoint import (
    PruneResult,
    Verification,
    checkpoint_bytes,
    count_parameters,
    prune_layers_to_checkpoint,
    write_checkpoint,
)
from shortlvlm.jobs.source import ModelSource
from shortlvlm.methods import DEFAULT_METHOD
from shortlvlm.plan import Plan
from shortlvlm.pruning import Provenance, needs_calibration, prune, prune_listed
from shortlvlm.resume import StageCache, partial_dir_for
from shortlvlm.scoring import Scorer, scorer_from_dict
from shortlvlm.selection import check_removal
from shortlvlm.surgery import validate_layer_selection

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PruneRequest:
    """What to remove from `source` and where the checkpoint goes.

    Give `layers` (explicit indices) or `ratio` (chosen by `method`: its `scorer`, or the `plan`'s
    ranking and scorer); either way `compensation` (any of shortlvlm.compensation's options, or None) bridges the cuts,
    calibrated on `calibration`.
    `allow_other_weights` accepts a plan scored on other weights of the same config.
    """

    source: ModelSource
    out: Path
    layers: list[int] | None = None
    ratio: float | None = None
    method: str = DEFAULT_METHOD
    scorer: Scorer | None = None
    compensation: Compensation | None = None
    calibration: Calibration = Calibration()
    plan: Plan | None = None
    overwrite: bool = False
    verify: bool = True
    fresh: bool = False
    allow_other_weights: bool = False


def run_prune(request: PruneRequest) -> PruneResult:
    """Check, load, prune, save and verify; nothing lands at `request.out` unless every step succeeds."""
    source, out = request.source, Path(request.out)
    if (request.layers is None) == (request.ratio is None):
        raise ShortLVLMError("give exactly one of --layers (explicit indices) or --ratio (fraction chosen by --method)")
    # Every check that needs no weights runs first, so a bad request never waits for a large load.
    check_output_dir(out, request.overwrite)
    skeleton = source.skeleton()
    calibration = request.calibration
    if request.layers is not None:
        num_removed = len(validate_layer_selection(request.layers, source.adapter(skeleton)))
        if compensation_needs_data(request.compensation):
            calibration = read_calibration(calibration, source.name)
    else:
        num_removed = check_removal(skeleton, source.adapter(skeleton), request.ratio, request.plan,
                                    allow_other_weights=request.allow_other_weights)
        scorer = scorer_from_dict(request.plan.scorer) if request.plan is not None else request.scorer
        check_tis_layers(source.adapter(skeleton).num_layers, scorer, request.compensation)
        if needs_calibration(scorer, request.compensation, scored=request.plan is not None):
            calibration = read_calibration(calibration, source.name)
        if request.plan is None and scorer.needs_answers:
            check_answers(calibration, scorer.name)
    verification = Verification(enabled=request.verify, trust_remote_code=source.loading.trust_remote_code)
    expected = checkpoint_bytes(skeleton, source.adapter(skeleton), num_removed, source.loading.dtype)
    del skeleton
    with claim_output(out, overwrite=request.overwrite, expected_bytes=expected):
        model, processor = source.load()
        adapter = source.adapter(model)
        if request.layers is not None and request.compensation is not None:
            before = count_parameters(model)
            model, plan = prune_listed(model, processor, request.layers, compensation=request.compensation,
                                       calibration=calibration, adapter=adapter, source=source.name)
            out, report = write_checkpoint(model, processor, plan, out, overwrite=request.overwrite,
                                           verification=verification)
            return PruneResult(out, plan, before, count_parameters(model), report, adapter)
        if request.layers is not None:
            return prune_layers_to_checkpoint(model, processor, request.layers, out, adapter=adapter,
                                              overwrite=request.overwrite, verification=verification,
                                              source=source.name)
        before = count_parameters(model)
        cache = StageCache(partial_dir_for(out), identity={"weights": weights_stamp(source.name)})
        if request.fresh:
            cache.clear()
        try:
            model, plan = prune(model, processor, request.ratio, scorer=None if request.plan else request.scorer,
                                compensation=request.compensation, calibration=calibration, plan=request.plan,
                                cache=cache, adapter=adapter,
                                provenance=Provenance(request.method, source.name, request.allow_other_weights))
            after = count_parameters(model)
            out, report = write_checkpoint(model, processor, plan, out, overwrite=request.overwrite,
                                           verification=verification)
        except OutputWriteError as err:
            if not cache.directory.exists():
                raise
            # Like an interruption, the finished stages stay for the rerun; say where, since space is short.
            raise OutputWriteError(f"{err}. The finished stages (scores, SCP statistics) stay in "
                                   f"{cache.directory} for the rerun; delete it to start over") from err
        cache.clear()
    return PruneResult(out, plan, before, after, report, adapter)
