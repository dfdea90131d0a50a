"""The method's public API: `score` ranks every decoder layer once, `prune` removes (and compensates) them.

`prune(model, processor, ratio)` with its defaults is the best measured recipe, tis-loss+lstsq: TISLoss()
scoring and the LstSq() bridge on the calibration set (docs/design.md §2.7). The paper's Short-LVLM is
`prune(..., scorer=TISCosine(), compensation=SCP())`. Every choice is an options object
(shortlvlm.options): the scorer (any of shortlvlm.scoring), `compensation` (SCP, LstSq, Cosine,
Magnitude, LaCo or None) and `calibration`
(Calibration(...), a CalibrationSet read before, or a list of samples). The plan records each
of them as one sub-dict, so `prune(..., plan=plan)` reuses a ranking without scoring again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation import (
    COMPENSATIONS,
    SCP,
    Compensation,
    LstSq,
    compensate,
    compensation_needs_data,
    compensation_record,
)
from shortlvlm.data.calibration import CalibrationSample
from shortlvlm.data.calibration_set import Calibration, CalibrationSet, calibration_set
from shortlvlm.data.encode import encode_calibration
from shortlvlm.errors import ScoringError
from shortlvlm.importance import TIS
from shortlvlm.io.fingerprint import model_fingerprint, weights_sample_fingerprint
from shortlvlm.methods import DEFAULT_METHOD, METHODS, default_compensation, method_name
from shortlvlm.models import Adapter, get_adapter
from shortlvlm.plan import Plan
from shortlvlm.resume import StageCache, keys
from shortlvlm.scoring import Scorer, ScoringContext, TISCosine, TISLoss, scorer_from_dict, scorer_to_dict
from shortlvlm.selection import check_removal, planned_removal
from shortlvlm.surgery import drop_layers, validate_layer_selection

CalibrationInput = Calibration | CalibrationSet | Sequence[CalibrationSample] | None  # None: no data


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What a plan from `score` or `prune` records about where it came from, and which given plan `prune` accepts.

    `method`: the name the plan records (default: the plan's, else the recipe of the scorer and
    compensation); `source`: the model's name (hub id, folder or `toy`), recorded in the plan and naming
    the bundled calibration set of a test bed; `allow_other_weights` (`prune` only; `score` ignores it):
    accept a plan scored on other weights of the same config (e.g. the base model of a fine-tune).
    """

    method: str | None = None
    source: str = ""
    allow_other_weights: bool = False


def score(
    model: nn.Module,
    processor,
    *,
    scorer: Scorer | None = None,
    calibration: CalibrationInput = Calibration(),
    num_remove: int | None = None,
    adapter: Adapter | None = None,
    provenance: Provenance = Provenance(),
) -> Plan:
    """Rank every layer with `scorer` (default TISLoss()) on the calibration set; the plan holds the order.

    `num_remove` bounds scorers that rank as they remove (sleb, tis-loss, iterative tis-cosine) and
    picks the angular block; by default every removable layer is ranked. `provenance`, as in `prune`:
    its `source` names the model (`toy` also selects the bundled calibration set when `calibration` names
    no file); its `method` is the name the plan records, and its compensation is what `prune(..., plan=plan)`
    from the CLI applies (default: tis-loss+lstsq without a scorer, short-lvlm for TISCosine, else the
    scorer's name). Its `allow_other_weights` is ignored here: it is about a given plan, and `score` takes none.
    """
    method, source = provenance.method, provenance.source
    adapter = adapter or get_adapter(model)
    if scorer is None:
        scorer, method = TISLoss(), method or DEFAULT_METHOD
    method = _checked_method(method) or method_name(scorer, SCP())
    calib = calibration_set(calibration, source or None) if scorer.needs_data else None
    if num_remove is None:
        num_remove = len(ScoringContext(model, adapter, []).candidates())
    return _rank(model, adapter, scorer, method, calib, _batches(calib, processor, adapter),
                 num_remove=num_remove, source=source)


def prune(
    model: nn.Module,
    processor,
    ratio: float,
    *,
    scorer: Scorer | None = None,
    compensation: Compensation | None = LstSq(),
    calibration: CalibrationInput = Calibration(),
    plan: Plan | None = None,
    cache: StageCache | None = None,
    adapter: Adapter | None = None,
    provenance: Provenance = Provenance(),
) -> tuple[nn.Module, Plan]:
    """Remove round(ratio * L) layers ranked by `scorer` (default TISLoss()), bridge each cut with
    `compensation` (default LstSq(); SCP(), or None), and return (model, plan); the model is edited in place.

    With `plan` (from `score`), its ranking and scorer are reused and no scoring pass runs; a
    compensation still needs a pass over the calibration set (one per run for sequential bridges) to
    measure the chosen layers' gap (LaCo() needs none: it merges weights). With `cache` (shortlvlm.resume), the
    scored plan and the compensation's statistics are saved as they finish and reused when the same job runs again.
    `provenance` (Provenance(method=..., source=..., allow_other_weights=...)) names the method and model
    the plan records (default method: the plan's, else the recipe of the scorer and compensation:
    tis-loss+lstsq for TISLoss with LstSq, short-lvlm for TISCosine with SCP; else the scorer's name).
    """
    method, source = provenance.method, provenance.source
    allow_other_weights = provenance.allow_other_weights
    adapter = adapter or get_adapter(model)
    if plan is not None and scorer is not None:
        raise ScoringError("give a scorer or a plan, not both: a plan from `score` holds its scorer")
    if compensation is not None and not isinstance(compensation, tuple(COMPENSATIONS.values())):
        names = ", ".join(f"{cls.__name__}(...)" for cls in COMPENSATIONS.values())
        raise ScoringError(f"unknown compensation {compensation!r}; pass one of {names}, or None")
    count = check_removal(model, adapter, ratio, plan, allow_other_weights=allow_other_weights)
    scorer = scorer_from_dict(plan.scorer) if plan is not None else scorer or TISLoss()
    method = _checked_method(method) or (plan.method if plan is not None else method_name(scorer, compensation))
    calib = calibration_set(calibration, source or None) if needs_calibration(scorer, compensation,
                                                                              scored=plan is not None) else None
    batches = _batches(calib, processor, adapter)
    if plan is None:
        def rank() -> Plan:
            return _rank(model, adapter, scorer, method, calib, batches, num_remove=count, source=source)
        plan = rank() if cache is None else cache.plan(
            keys.plan_key(model, calib, _batch_size(calib), method=method, count=count, scorer=scorer), rank)
    removed = validate_layer_selection(planned_removal(plan, count), adapter)
    params = dict(plan.params)
    if compensation is not None:
        if calib is not None and plan.calibration.get("hash") not in (None, calib.hash):
            params["scp_calibration"] = calib.info()
        if isinstance(compensation, SCP) and compensation.tis is None:
            compensation = dataclasses.replace(compensation, tis=_tis_of(scorer))
        gaps = None
        if cache is not None and compensation_needs_data(compensation):
            def gaps(compensation=compensation):
                key = keys.gaps_key(model, calib, _batch_size(calib), removed=removed, compensation=compensation)
                return cache.tensors(compensation.name, key, lambda: compensation.measure(
                    model, adapter, batches, removed))
        started = time.perf_counter()
        report = compensate(model, adapter, batches, removed, compensation, gaps=gaps)
        params.update(compensation_report=report, compensation_seconds=round(time.perf_counter() - started, 3))
    drop_layers(model, removed, adapter)
    name, options = compensation_record(compensation)
    pruned = Plan(method=method, num_layers_before=plan.num_layers_before, removed_layers=removed,
                  compensation=name, ratio=ratio, layer_scores=plan.layer_scores, scorer=plan.scorer,
                  scp=options if name == "scp" else None, compensation_options=options, params=params,
                  calibration=dict(plan.calibration), model=plan.model)
    return model, pruned


def prune_listed(
    model: nn.Module,
    processor,
    layers: Sequence[int],
    *,
    compensation: Compensation | None,
    calibration: CalibrationInput = Calibration(),
    adapter: Adapter | None = None,
    source: str = "",
) -> tuple[nn.Module, Plan]:
    """Remove the listed layers (original indices), each run bridged by `compensation` first (SCP measures on
    every real token: no scorer chose these layers); the plan's method is "manual"."""
    adapter = adapter or get_adapter(model)
    removed = validate_layer_selection(list(layers), adapter)
    params: dict = {}
    calib = None
    if compensation is not None:
        if isinstance(compensation, SCP) and compensation.tis is None:
            compensation = dataclasses.replace(compensation, tis=TIS(tokens="all"))
        calib = calibration_set(calibration, source or None) if compensation_needs_data(compensation) else None
        started = time.perf_counter()
        report = compensate(model, adapter, _batches(calib, processor, adapter), removed, compensation)
        params.update(compensation_report=report, compensation_seconds=round(time.perf_counter() - started, 3))
    model_record = {"name_or_path": source, "class": type(model).__name__, "adapter": adapter.spec.name,
                    "fingerprint": model_fingerprint(model)}
    num_layers = adapter.num_layers
    drop_layers(model, removed, adapter)
    name, options = compensation_record(compensation)
    return model, Plan(method="manual", num_layers_before=num_layers, removed_layers=removed, compensation=name,
                       scp=options if name == "scp" else None, compensation_options=options, params=params,
                       calibration=calib.info() if calib is not None else {}, model=model_record)


def needs_calibration(scorer: Scorer, compensation: Compensation | None, *, scored: bool = False) -> bool:
    """Whether pruning reads calibration data: with a compensation that measures on it (every one but LaCo); for
    scoring unless the scorer needs none or a scored plan is given."""
    return compensation_needs_data(compensation) or (not scored and scorer.needs_data)


def _checked_method(method: str | None) -> str | None:
    if method is not None and method not in METHODS:
        raise ScoringError(f"unknown method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    return method


def _tis_of(scorer: Scorer) -> TIS:
    """The tokens SCP measures the gap on when not told: the scorer's TIS, else every real token."""
    return scorer.tis if isinstance(scorer, TISCosine) else TIS(tokens="all")


def _batch_size(calib: CalibrationSet | None) -> int:
    return calib.options.batch_size if calib is not None else Calibration().batch_size


def _batches(calib: CalibrationSet | None, processor, adapter: Adapter) -> list[CalibrationBatch]:
    """The set's batches: encoded already (shared by a comparison), else encoded now, once per call."""
    if calib is None:
        return []
    if calib.batches is not None:
        return list(calib.batches)
    return encode_calibration(list(calib.samples), processor, adapter, batch_size=calib.options.batch_size)


def _rank(model: nn.Module, adapter: Adapter, scorer: Scorer, method: str, calib: CalibrationSet | None,
          batches: list[CalibrationBatch], *, num_remove: int, source: str) -> Plan:
    started = time.perf_counter()
    ranking = scorer.rank(ScoringContext(model, adapter, batches), num_remove)
    seconds = time.perf_counter() - started
    return Plan(
        method=method,
        num_layers_before=adapter.num_layers,
        removed_layers=[],
        compensation=default_compensation(method),
        ratio=0.0,
        layer_scores=[float(s) for s in ranking.scores],
        scorer=scorer_to_dict(scorer),
        params={"removal_order": ranking.order, "score_meaning": ranking.score_meaning,
                "scoring_seconds": round(seconds, 3), **ranking.details},
        calibration=calib.info() if calib is not None else {},
        model={"name_or_path": source or getattr(model.config, "_name_or_path", ""), "class": type(model).__name__,
               "adapter": adapter.spec.name, "fingerprint": model_fingerprint(model),
               "weights": weights_sample_fingerprint(model)},
    )
