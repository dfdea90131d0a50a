"""The public method API: `score` ranks layers on calibration data, `prune` removes (and compensates) them."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence

from torch import nn

from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation import compensate
from shortlvlm.data.calibration import CalibrationSample, calibration_hash, load_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.errors import InvalidLayerSelectionError
from shortlvlm.models import Adapter, get_adapter
from shortlvlm.plan import Plan, PlanError
from shortlvlm.resume import StageCache
from shortlvlm.scoring import DATA_FREE, METHODS, ScoringContext, ScoringError, get_scorer
from shortlvlm.surgery import drop_layers, validate_layer_selection

# Defaults of the open choices (DESIGN §2); benchmarks/ablation_short_lvlm.py measures them on the toy.
DEFAULT_TIS_TOP_P = 0.5
DEFAULT_SCP_RANK = 8
DEFAULT_SCP_ALPHA: float | str = 1.0
DEFAULT_SCP_WRITERS = "mlp"
COMPENSATIONS = ("none", "scp")
_CONFIG_VOLATILE = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation",
                    "_attn_implementation_autoset", "architectures", "use_cache"}


def model_fingerprint(model: nn.Module) -> str:
    """Short hash of the model's config (minus names, dtype, attention kernel): a plan's target."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _CONFIG_VOLATILE}
        return value
    text = json.dumps(clean(model.config.to_dict()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def layers_to_remove(ratio: float, adapter: Adapter) -> int:
    """n = round(ratio * L), with clear errors for ratios that remove nothing or everything."""
    total = adapter.num_layers
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise InvalidLayerSelectionError(f"--ratio must be a fraction strictly between 0 and 1, got {ratio!r}")
    count = round(ratio * total)
    if count < 1:
        raise InvalidLayerSelectionError(
            f"ratio {ratio} removes no layer of {total} (round({ratio} x {total}) = 0); use at least {1 / total:.3f}"
        )
    removable = total - 1 - len(adapter.protected_layers())
    if count > removable:
        raise InvalidLayerSelectionError(
            f"ratio {ratio} would remove {count} of {total} layers, but at most {removable} can go "
            "(one layer must stay; protected layers cannot be removed)"
        )
    return count


def needs_calibration(scorer: str, compensation: str, *, scored: bool = False) -> bool:
    """Whether pruning needs calibration data: SCP always; scoring unless the scorer is data-free or a plan is given."""
    return compensation == "scp" or (not scored and scorer not in DATA_FREE)


def _resolve_method(method: str, compensation: str | None) -> tuple[str, str]:
    if method not in METHODS:
        raise ScoringError(f"unknown method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    scorer, default_compensation = METHODS[method]
    compensation = compensation or default_compensation
    if compensation not in COMPENSATIONS:
        raise ScoringError(f"unknown compensation {compensation!r}; choose one of: {', '.join(COMPENSATIONS)}")
    return scorer, compensation


def _scorer_params(scorer: str, *, tis_top_p, tis_layers, tis_joint, tis_tokens, iterative, seed,
                   tis_skip_template=True) -> dict:
    if scorer == "tis-cosine":
        return {"top_p": tis_top_p, "probe_layers": tis_layers, "joint": tis_joint, "tokens": tis_tokens,
                "iterative": iterative, "skip_template": tis_skip_template}
    if scorer == "random":
        return {"seed": seed}
    return {}


def _calibration(calib, model_name: str | None, num_samples: int | None) -> tuple[list[CalibrationSample], dict]:
    source = calib if isinstance(calib, (str, os.PathLike)) or calib is None else "<samples>"
    samples = calib if isinstance(calib, list) else load_calibration(calib, model_name=model_name, limit=num_samples)
    if num_samples is not None:
        samples = samples[:num_samples]
    info = {"source": str(source) if source is not None else "toy", "num_samples": len(samples),
            "hash": calibration_hash(samples)}
    return samples, info


def score(
    model: nn.Module,
    processor,
    calib: str | os.PathLike | list[CalibrationSample] | None,
    method: str = "short-lvlm",
    *,
    num_remove: int | None = None,
    tis_top_p: float = DEFAULT_TIS_TOP_P,
    tis_layers: str | Sequence[int] = "all",
    tis_joint: bool = False,
    tis_tokens: str = "important",
    tis_skip_template: bool = True,
    iterative: bool = False,
    seed: int = 0,
    num_samples: int | None = None,
    batch_size: int = 8,
    adapter: Adapter | None = None,
    batches: list[CalibrationBatch] | None = None,
    source: str = "",
    progress: bool = True,
) -> Plan:
    """Rank every layer on the calibration set; the plan's params hold the full removal order.

    `num_remove` bounds iterative scoring (one capture pass per removed layer); one-shot ranks all.
    `calib` is a JSONL path, "toy"/None (bundled, toy model only) or a list of samples.
    """
    adapter = adapter or get_adapter(model)
    samples, calib_info = _calibration(calib, source or None, num_samples)
    return _rank(model, processor, adapter, method, samples, calib_info, batches, num_remove=num_remove,
                 scorer_params=dict(tis_top_p=tis_top_p, tis_layers=tis_layers, tis_joint=tis_joint,
                                    tis_tokens=tis_tokens, tis_skip_template=tis_skip_template,
                                    iterative=iterative, seed=seed),
                 batch_size=batch_size, source=source, progress=progress)


def _rank(model, processor, adapter, method, samples, calib_info, batches, *, num_remove, scorer_params,
          batch_size, source, progress) -> Plan:
    scorer_name, default_compensation = _resolve_method(method, None)
    scorer = get_scorer(scorer_name, **_scorer_params(scorer_name, **scorer_params))
    if batches is None and scorer_name not in DATA_FREE:
        batches = encode_calibration(samples, processor, adapter, batch_size=batch_size, progress=progress)
    if num_remove is None:
        num_remove = len(ScoringContext(model, adapter, []).candidates())
    started = time.perf_counter()
    ranking = scorer.rank(ScoringContext(model, adapter, batches or [], progress), num_remove)
    seconds = time.perf_counter() - started
    return Plan(
        method=method,
        num_layers_before=adapter.num_layers,
        removed_layers=[],
        compensation=default_compensation,
        ratio=0.0,
        layer_scores=[float(s) for s in ranking.scores],
        params={"scorer": scorer_name, **scorer.params(), "removal_order": ranking.order,
                "score_meaning": ranking.score_meaning, "scoring_seconds": round(seconds, 3), **ranking.details},
        calibration=calib_info,
        model=_model_info(model, adapter, source),
    )


def _model_info(model: nn.Module, adapter: Adapter, source: str) -> dict:
    return {"name_or_path": source or getattr(model.config, "_name_or_path", ""), "class": type(model).__name__,
            "adapter": adapter.spec.name, "fingerprint": model_fingerprint(model)}


def check_plan_matches(plan: Plan, model: nn.Module, adapter: Adapter) -> None:
    """Refuse a plan scored on a different model (layer count or config fingerprint)."""
    if plan.num_layers_before != adapter.num_layers:
        raise PlanError(
            f"the plan was made for a model with {plan.num_layers_before} decoder layers; this one has "
            f"{adapter.num_layers}. Score this model instead (shortlvlm score)"
        )
    expected = plan.model.get("fingerprint") if isinstance(plan.model, dict) else None
    if expected and expected != model_fingerprint(model):
        raise PlanError(
            f"the plan was made for another model ({plan.model.get('name_or_path') or 'unknown'}, config hash "
            f"{expected}; this model's is {model_fingerprint(model)}). Score this model instead"
        )
    if plan.removed_layers:
        raise PlanError("this plan already records removed layers; pass the plan written by `shortlvlm score`")
    order = plan.params.get("removal_order") if isinstance(plan.params, dict) else None
    if not _is_layer_list(order, adapter):
        raise PlanError("the plan has no valid params.removal_order (distinct layer indices); "
                        "write it with `shortlvlm score`")
    sets = plan.params.get("removal_sets")
    if sets is not None and not (isinstance(sets, dict) and all(
            isinstance(k, str) and k.isdigit() and _is_layer_list(v, adapter) and len(v) == int(k)
            for k, v in sets.items())):
        raise PlanError("the plan's params.removal_sets must map each count (\"3\") to that many distinct "
                        "layer indices; write it with `shortlvlm score`")


def _is_layer_list(value, adapter: Adapter) -> bool:
    return (isinstance(value, list) and all(_is_layer(i, adapter) for i in value)
            and len(set(value)) == len(value))


def _is_layer(value, adapter: Adapter) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < adapter.num_layers


def planned_removal(plan: Plan, count: int) -> list[int]:
    """The layers a plan removes at `count`: its set for that size if it has one, else its order's prefix."""
    sets = plan.params.get("removal_sets")
    if isinstance(sets, dict) and sets:
        chosen = sets.get(str(count))
        if not isinstance(chosen, list) or len(chosen) != count:
            sizes = ", ".join(sorted(map(str, sets), key=lambda n: (len(n), n)))
            raise PlanError(f"the plan has removal sets for {sizes} layers, not {count}; score again for this "
                            "ratio (angular plans hold one block per size)")
        return list(chosen)
    order = plan.params["removal_order"]
    if len(order) < count:
        raise PlanError(f"the plan ranks only {len(order)} layers but {count} must go (the method ranks only "
                        "as many as it was asked for, or protects the rest); score again with a larger "
                        "--max-ratio, or use a lower --ratio")
    return list(order[:count])


def prune(
    model: nn.Module,
    processor,
    calib: str | os.PathLike | list[CalibrationSample] | None,
    ratio: float,
    method: str = "short-lvlm",
    compensation: str | None = None,
    *,
    plan: Plan | None = None,
    scp_rank: int = DEFAULT_SCP_RANK,
    scp_alpha: float | str = DEFAULT_SCP_ALPHA,
    scp_writers: str = DEFAULT_SCP_WRITERS,
    scp_tokens: str | None = None,
    scp_normalize: bool = False,
    tis_top_p: float = DEFAULT_TIS_TOP_P,
    tis_layers: str | Sequence[int] = "all",
    tis_joint: bool = False,
    tis_tokens: str = "important",
    tis_skip_template: bool = True,
    iterative: bool = False,
    seed: int = 0,
    num_samples: int | None = None,
    batch_size: int = 8,
    adapter: Adapter | None = None,
    batches: list[CalibrationBatch] | None = None,
    source: str = "",
    progress: bool = True,
    cache: StageCache | None = None,
) -> tuple[nn.Module, Plan]:
    """Remove round(ratio * L) layers chosen by `method`, compensate them (scp) and return (model, plan).

    With `plan` (from `score`), its removal order is reused and no scoring pass runs; SCP still
    needs one forward pass over the calibration set to measure the gap of the chosen layers.
    The model is edited in place. With `cache` (see shortlvlm.resume), the scored plan and the SCP
    statistics are saved as they finish and reused when the same job runs again.
    """
    adapter = adapter or get_adapter(model)
    count = layers_to_remove(ratio, adapter)
    if plan is not None:
        check_plan_matches(plan, model, adapter)
        method = plan.method
    scorer_name, compensation = _resolve_method(method, compensation)
    needs_data = needs_calibration(scorer_name, compensation, scored=plan is not None)
    samples, calib_info = _calibration(calib, source or None, num_samples) if needs_data else ([], {})
    if batches is None and needs_data:
        batches = encode_calibration(samples, processor, adapter, batch_size=batch_size, progress=progress)
    scorer_params = dict(tis_top_p=tis_top_p, tis_layers=tis_layers, tis_joint=tis_joint, tis_tokens=tis_tokens,
                         tis_skip_template=tis_skip_template, iterative=iterative, seed=seed)
    base_key = {"model": model_fingerprint(model), "dtype": str(next(model.parameters()).dtype),
                "calibration": calib_info.get("hash"), "batch_size": batch_size}
    plan_key = {**base_key, "method": method, "count": count,
                "scorer": _scorer_params(scorer_name, **scorer_params)}
    if plan is None and cache is not None:
        plan = cache.load_plan(plan_key)
    if plan is None:
        plan = _rank(model, processor, adapter, method, samples, calib_info, batches, num_remove=count,
                     scorer_params=scorer_params, batch_size=batch_size, source=source, progress=progress)
        if cache is not None:
            cache.save_plan(plan_key, plan)
    removed = validate_layer_selection(planned_removal(plan, count), adapter)
    params = dict(plan.params)
    calibration = dict(plan.calibration)
    if compensation == "scp":
        if calibration.get("hash") not in (None, calib_info["hash"]):
            params["scp_calibration"] = calib_info
        tokens = scp_tokens or (params.get("tokens", "important") if params.get("scorer") == "tis-cosine" else "all")
        started = time.perf_counter()
        report = compensate(model, adapter, batches, removed, rank=scp_rank, alpha=scp_alpha, writers=scp_writers,
                            tokens=tokens, top_p=params.get("tis_top_p", tis_top_p),
                            probe_layers=params.get("tis_layers", tis_layers),
                            joint=params.get("tis_joint", tis_joint),
                            skip_template=params.get("tis_skip_template", tis_skip_template), normalize=scp_normalize,
                            progress=progress, cache=cache, cache_key=base_key)
        params.update(scp_rank=scp_rank, scp_alpha=scp_alpha, scp_writers=scp_writers, scp_tokens=tokens,
                      scp_normalize=scp_normalize,
                      compensation_report=report, compensation_seconds=round(time.perf_counter() - started, 3))
    drop_layers(model, removed, adapter)
    pruned = Plan(method=method, num_layers_before=plan.num_layers_before, removed_layers=removed,
                  compensation=compensation, ratio=ratio, layer_scores=plan.layer_scores, params=params,
                  calibration=calibration, model=plan.model)
    return model, pruned
