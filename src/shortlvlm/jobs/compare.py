"""`shortlvlm compare`: every layer-selection rule on the same calibration data, side by side.

Each scorer ranks the layers once, for the largest ratio; every compared method gets that ranking as its
own plan, plans/{label}.json, with its method name and compensation (so `prune --plan plans/short-lvlm.json`
reproduces the short-lvlm cells). With `rank_per_ratio`, the scorers whose first layers depend on how many
go (tis-loss, laco) rank for every ratio alone instead (plans/{label}@{ratio}.json), so their cells are
`prune --ratio R`'s (docs/design.md §2.4). Every method then prunes a fresh copy of the model at every
ratio from its plan (compensating where asked), and the result is evaluated on the benchmark.
The unpruned model is evaluated once as the reference. Progress is saved after every step
(results.json, written atomically), so a killed run continues where it stopped when started again
with the same arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from shortlvlm.compensation import compensation_record
from shortlvlm.data.benchmarks import headline
from shortlvlm.data.calibration import CalibrationSample
from shortlvlm.data.calibration_set import CalibrationSet, calibration_set
from shortlvlm.data.encode import encode_calibration
from shortlvlm.eval.evaluate import evaluate
from shortlvlm.io.output import claim_output
from shortlvlm.jobs.compare_report import ratio_key, write_report
from shortlvlm.jobs.compare_results import Comparison, write_json
from shortlvlm.jobs.compare_spec import CompareError, CompareRequest, MethodSpec, parse_methods
from shortlvlm.jobs.source import ModelSource
from shortlvlm.plan import Plan, PlanError
from shortlvlm.pruning import Provenance, prune, score
from shortlvlm.resume.keys import comparison_key
from shortlvlm.selection import layers_to_remove, planned_removal

logger = logging.getLogger(__name__)


def measured_with(cell: dict, spec: MethodSpec) -> bool:
    """Whether a finished cell was measured with the setting's current compensation options. A cell that does not
    record an option was made with the value in its compensation's `recorded_before` (lstsq's prior: 'zero'), else
    with today's default (cells from before options were recorded count as current where no default changed)."""
    compensation = spec.make_compensation()
    current = compensation_record(compensation)[1]
    before = type(compensation).recorded_before if compensation is not None else {}
    if "compensation_options" not in cell:
        return all(current.get(name) == value for name, value in before.items()) if current else True
    recorded = cell["compensation_options"]
    return (recorded if recorded is None else {**before, **recorded}) == current


def holds_ranking(path: Path, plan: Plan) -> bool:
    """Whether a compared method's plan file holds `plan`'s ranking (a file left by another ranking does not)."""
    try:
        kept = Plan.load(path)
    except PlanError:
        return False
    return kept.scorer == plan.scorer and kept.params.get("removal_order") == plan.params.get("removal_order")


def method_plan(scored: Plan, spec: MethodSpec) -> Plan:
    """A scorer's plan as one compared method's: its method name and compensation with that setting's options."""
    name, options = compensation_record(spec.make_compensation())
    return dataclasses.replace(scored, method=spec.recorded_method, compensation=name, compensation_options=options,
                               scp=options if name == "scp" else None)


def run_compare(source: ModelSource, out: str | Path, request: CompareRequest, samples: list,
                calibration: CalibrationSet | Sequence[CalibrationSample] | None) -> dict:
    """Score once per scorer, prune every (method, ratio) from a fresh load of `source`, evaluate `samples` (the
    request's benchmark questions); resumable."""
    methods = request.method_specs()
    needs_data = any(m.needs_calibration for m in methods)
    if needs_data and not calibration:
        raise CompareError("the compared methods need calibration data (--calib; bundled for toy)")
    with claim_output(out, overwrite=request.overwrite, resumable=True):
        return _compare(source, Path(out), request, samples, calibration)


def _compare(source: ModelSource, out: Path, request: CompareRequest, samples: list,
             calibration: CalibrationSet | Sequence[CalibrationSample] | None) -> dict:
    methods, ratios, bench, seed = request.method_specs(), list(request.ratios), request.bench, request.seed
    eval_batch_size, overwrite = request.eval_batch_size, request.overwrite
    needs_data = any(m.needs_calibration for m in methods)
    calib = calibration_set(calibration) if calibration else None
    config = comparison_key(source.name, request, num_questions=len(samples), calibration=calib)
    results = Comparison(Path(out), config, overwrite=overwrite)
    model = processor = None

    def encoded(processor, adapter) -> CalibrationSet | None:
        """The calibration set encoded once (batches are plain tensors, shared by every copy of the model)."""
        nonlocal calib
        if needs_data and calib.batches is None:
            calib = calib.with_batches(encode_calibration(list(calib.samples), processor, adapter,
                                                          batch_size=calib.options.batch_size))
        return calib

    def scoring_model():
        nonlocal model, processor
        if model is None:
            model, processor = source.load()
        return model, processor

    def ranks_per_ratio(scorer) -> bool:
        """Whether `scorer` ranks for every ratio alone here (its first layers depend on the count)."""
        return request.rank_per_ratio and scorer.order_depends_on_count

    def rank(name: str, specs: list[MethodSpec], scorer, ratio: float | None) -> None:
        """`scorer`'s ranking for the largest ratio (`ratio` None) or for `ratio` alone, reused where this folder
        holds it with the scorer's current options and for the count it must cover; every compared method of
        the scorer gets it as its plan. Cells a new ranking would not reproduce are measured again."""
        nonlocal model, processor
        scope = ratios if ratio is None else [ratio]
        scored = results.data["scoring"].get(name)
        recorded = scored if ratio is None else (scored or {}).get("ratios", {}).get(ratio_key(ratio))
        plan = results.scored_plan(scorer, specs, ratio) if recorded is not None else None
        if plan is None and recorded is not None:  # its cells came from that other ranking
            stale = [label for label in results.data["cells"] if parse_methods(label)[0].scorer == name
                     and (ratio is None or ratio_key(ratio) in results.data["cells"][label])]
            logger.info(f"no plan of {name} with its current options here (an older version's defaults, or a missing "
                f"plan file): scoring again; its results ({', '.join(stale) or 'none'}) are measured again")
            for label in stale:
                if ratio is None:
                    del results.data["cells"][label]
                else:
                    del results.data["cells"][label][ratio_key(ratio)]
                results.plan_path(label, ratio).unlink(missing_ok=True)  # that ranking's plan goes with its cells
        if plan is not None and scorer.needs_count:  # extended to a higher ratio: a longer order is needed
            ranked = len(plan.params.get("removal_order", []))
            needed = max(round(r * plan.num_layers_before) for r in scope)  # layers_to_remove's count
            if ranked < needed or (ratio is not None and scorer.order_depends_on_count and ranked != needed):
                logger.info(f"{name} ranked {ranked} layers; {needed} needed: scoring again")
                plan = None
        rescored = plan is None
        if rescored:
            model, processor = scoring_model()
            adapter = source.adapter(model)
            at = "" if ratio is None else f" for {ratio:.0%}"
            logger.info(f"scoring layers with {name}{at} ...")
            num_remove = max(layers_to_remove(r, adapter) for r in scope) if scorer.needs_count else None
            plan = score(model, processor, scorer=scorer, calibration=encoded(processor, adapter),
                         num_remove=num_remove, adapter=adapter,
                         provenance=Provenance(method=name, source=source.name))
            entry = {"seconds": plan.params["scoring_seconds"], "removal_order": plan.params["removal_order"]}
            if ratio is None:
                results.data["scoring"][name] = entry
            else:  # one search per ratio: the scoring time is their sum
                per_ratio = {**(scored or {}).get("ratios", {}), ratio_key(ratio): entry}
                results.data["scoring"][name] = {"seconds": round(sum(e["seconds"] for e in per_ratio.values()), 3),
                                                 "ratios": per_ratio}
            drop_unreproduced(name, specs, plan, scope)
        for spec in specs:  # one plan per compared method, so `prune --plan plans/LABEL.json` gives that cell
            if rescored or not holds_ranking(results.plan_path(spec.label, ratio), plan):
                write_json(results.plan_path(spec.label, ratio), method_plan(plan, spec).to_dict())

    def drop_unreproduced(name: str, specs: list[MethodSpec], plan: Plan, scope: list[float]) -> None:
        """A new ranking (e.g. for a higher ratio, with tis-loss's larger pool) can remove other layers at a ratio
        measured before: those cells are measured again, so each stays what its plan gives."""
        for spec in specs:
            for r in scope:
                cell = results.cell(spec.label, r)
                count = round(r * plan.num_layers_before)
                if cell is not None and sorted(cell["removed_layers"]) != sorted(planned_removal(plan, count)):
                    logger.info(f"{spec.label} at {ratio_key(r)}: the new {name} ranking removes other layers; "
                                "measured again")
                    del results.data["cells"][spec.label][ratio_key(r)]

    for name in dict.fromkeys(m.scorer for m in methods):
        specs = [m for m in methods if m.scorer == name]
        scorer = specs[0].make_scorer(seed)  # parse_methods allows one scorer setting per scorer
        for ratio in ratios if ranks_per_ratio(scorer) else [None]:
            rank(name, specs, scorer, ratio)
        results.save()

    if results.data["unpruned"] is None:
        model, processor = scoring_model()
        logger.info("evaluating the unpruned model ...")
        started = time.perf_counter()
        metrics, _ = evaluate(model, processor, bench, samples, batch_size=eval_batch_size)
        results.data["unpruned"] = {"metrics": metrics, "score": headline(bench, metrics),
                                    "eval_seconds": round(time.perf_counter() - started, 1)}
        results.save()
    del model, processor

    stale = [(m, r) for m in methods for r in ratios
             if results.cell(m.label, r) is not None and not measured_with(results.cell(m.label, r), m)]
    if stale:
        logger.info(f"{len(stale)} cell(s) measured with other compensation options "
                    f"({stale[0][0].label}'s defaults changed): measured again")
    todo = [(m, r) for m in methods for r in ratios if results.cell(m.label, r) is None or (m, r) in stale]
    for index, (spec, ratio) in enumerate(todo, 1):
        logger.info(f"[{index}/{len(todo)}] {spec.label} at {ratio_key(ratio)} ...")
        plan = Plan.load(results.plan_path(spec.label, ratio if ranks_per_ratio(spec.make_scorer(seed)) else None))
        model, processor = source.load()
        adapter = source.adapter(model)
        compensation = spec.make_compensation()
        started = time.perf_counter()
        model, pruned = prune(model, processor, ratio, compensation=compensation,
                              calibration=encoded(processor, adapter) if compensation else None, plan=plan,
                              adapter=adapter, provenance=Provenance(spec.recorded_method, source.name))
        prune_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metrics, _ = evaluate(model, processor, bench, samples, batch_size=eval_batch_size)
        results.set_cell(spec.label, ratio, {
            "removed_layers": pruned.removed_layers, "metrics": metrics, "score": headline(bench, metrics),
            "prune_seconds": round(prune_seconds, 2), "eval_seconds": round(time.perf_counter() - started, 1),
            "compensation_options": compensation_record(spec.make_compensation())[1],  # as asked (measured_with)
        })
        del model, processor
    write_report(results.data, Path(out))
    return results.data
