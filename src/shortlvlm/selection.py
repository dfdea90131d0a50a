"""Which layers a request removes: n = round(ratio x L) checked against the model, and a scored plan's choice for n.

These checks need only the model's config and module tree, so jobs run them on the skeleton
(shortlvlm.io.load.load_skeleton) before any weights load, and `prune` runs the same ones; the one
that needs weights (a plan scored on other weights) runs only there, before any weight is edited.
"""

from __future__ import annotations

from torch import nn

from shortlvlm.errors import InvalidLayerSelectionError
from shortlvlm.io.fingerprint import model_fingerprint, weights_sample_fingerprint
from shortlvlm.models import Adapter
from shortlvlm.plan import Plan, PlanError


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


def check_plan_matches(plan: Plan, model: nn.Module, adapter: Adapter, *,
                       allow_other_weights: bool = False) -> None:
    """Refuse a plan scored on a different model (layer count, config fingerprint, and, unless allowed, the
    weights it records; a skeleton's weights are not checked)."""
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
    if not allow_other_weights:
        _check_plan_weights(plan, model)


def _check_plan_weights(plan: Plan, model: nn.Module) -> None:
    recorded = plan.model.get("weights") if isinstance(plan.model, dict) else None
    if not recorded:
        return  # plans written before weights were recorded
    actual = weights_sample_fingerprint(model)
    if actual is not None and recorded != actual:
        name = plan.model.get("name_or_path") or "unknown"
        raise PlanError(
            f"the plan was scored on other weights of this config ({name}, weights hash {recorded}; this "
            f"model's is {actual}). Score this model (shortlvlm score), or pass --plan-other-weights "
            "(Provenance(allow_other_weights=True) in the API) to use its ranking on these weights"
        )


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


def check_removal(model: nn.Module, adapter: Adapter, ratio: float, plan: Plan | None = None, *,
                  allow_other_weights: bool = False) -> int:
    """How many layers `ratio` removes; with a scored plan, also that it fits this model, covers that many
    layers and names a valid scorer. A job runs this on the skeleton before loading, `prune` on the model."""
    from shortlvlm.scoring import scorer_from_dict

    count = layers_to_remove(ratio, adapter)
    if plan is not None:
        check_plan_matches(plan, model, adapter, allow_other_weights=allow_other_weights)
        planned_removal(plan, count)
        scorer_from_dict(plan.scorer)
    return count
