"""`tis-loss`: TIS-cosine's pool, PPL's one-shot losses on it, SLEB's greedy step on a shortlist."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from tests.scoring.conftest import forbid_model_copies, labels_for
from tests.scoring.test_ppl import dropped_perplexity

from shortlvlm import drop_layers, get_adapter
from shortlvlm.scoring import ScoringError, TISCosine, TISLoss, get_scorer
from shortlvlm.scoring.tis_loss import pool_size


def test_pool_size():
    assert pool_size(5, 16, 0.5, 2) == 8  # 5 + ceil(2.5)
    assert pool_size(9, 30, 0.5, 2) == 14
    assert pool_size(1, 16, 0.5, 2) == 3  # at least 2 beyond n
    assert pool_size(5, 6, 0.5, 2) == 6  # never more layers than exist
    assert pool_size(3, 16, 0.0, 0) == 3


def test_pool_is_the_tis_cosine_top_and_scores_are_dropped_model_perplexities(make_context, monkeypatch):
    context = make_context("qwen2_vl", num_layers=8, dtype=torch.float64)
    forbid_model_copies(monkeypatch, "tis-loss")
    ranking = TISLoss(recheck=0, full_steps=0, bridge=False).rank(context, 2)
    monkeypatch.undo()
    cosine_order = TISCosine().rank(context, 2).order
    assert ranking.details["pool"] == cosine_order[:4]  # 2 + max(2, ceil(1))
    for layer in range(8):
        if layer in ranking.details["pool"]:
            assert ranking.scores[layer] == pytest.approx(dropped_perplexity(context, [layer]), rel=1e-9)
        else:
            assert ranking.scores[layer] != ranking.scores[layer]  # NaN: never measured
    pool = ranking.details["pool"]
    assert ranking.order == sorted(pool, key=lambda layer: ranking.scores[layer])[:2]  # recheck 0: one-shot order
    assert ranking.details["loss_passes"] == 4


def test_a_shortlist_of_one_spends_no_greedy_passes(make_context):
    context = make_context("llava", num_layers=8)
    one = TISLoss(recheck=1, full_steps=0, bridge=False).rank(context, 3)
    zero = TISLoss(recheck=0, full_steps=0, bridge=False).rank(context, 3)
    assert one.order == zero.order
    assert one.details["loss_passes"] == len(one.details["pool"]) == 5


def test_with_the_whole_model_as_pool_and_shortlist_it_is_sleb(make_context):
    context = make_context("llava", num_layers=6, dtype=torch.float64)
    ranking = TISLoss(pool_extra=10.0, recheck=6, bridge=False).rank(context, 3)
    assert ranking.order == get_scorer("sleb").rank(context, 3).order
    assert sorted(ranking.details["pool"]) == list(range(6))


def test_greedy_steps_equal_naive_greedy_on_dropped_models_within_the_shortlist(make_context):
    context = make_context("gemma3", num_layers=8, dtype=torch.float64)
    ranking = TISLoss(recheck=2, full_steps=0, bridge=False).rank(context, 3)
    pool = ranking.details["pool"]
    one_shot = {layer: dropped_perplexity(context, [layer]) for layer in pool}
    chosen = [min(pool, key=lambda layer: (one_shot[layer], layer))]
    for _ in range(2):
        shortlist = [layer for layer in sorted(pool, key=lambda la: (one_shot[la], la)) if layer not in chosen][:2]
        trials = {layer: dropped_perplexity(context, [*chosen, layer]) for layer in shortlist}
        chosen.append(min(trials, key=trials.get))
    assert ranking.order == chosen
    assert ranking.details["loss_passes"] == len(pool) + 2 * 2


def naive_pool_greedy(context, pool, num_remove, full, recheck):
    """The rule of `full_steps` written out on dropped models: full steps on the pool, then shortlists."""
    latest = {layer: dropped_perplexity(context, [layer]) for layer in pool}
    chosen = [min(pool, key=lambda layer: (latest[layer], layer))]
    passes = len(pool)
    for step in range(1, num_remove):
        remaining = sorted((la for la in pool if la not in chosen), key=lambda la: (latest[la], la))
        shortlist = remaining if step <= full else remaining[:recheck]
        trials = {layer: dropped_perplexity(context, [*chosen, layer]) for layer in shortlist}
        passes += len(shortlist)
        if step <= full:
            latest = trials
        chosen.append(min(trials, key=lambda layer: (trials[layer], layer)))
    return chosen, passes


@pytest.mark.parametrize("full", [1, 2])
def test_full_steps_follow_the_rule_on_dropped_models(make_context, full):
    context = make_context("llava", num_layers=8, dtype=torch.float64)
    ranking = TISLoss(recheck=2, full_steps=full, bridge=False).rank(context, 4)
    pool = ranking.details["pool"]
    assert len(pool) == 6
    assert (ranking.order, ranking.details["loss_passes"]) == naive_pool_greedy(context, pool, 4, full, 2)
    # the cost model of the docstring: P + (P-1) + ... + (P-F) + recheck * (n-1-F)
    assert ranking.details["loss_passes"] == 6 + sum(6 - k for k in range(1, full + 1)) + 2 * (3 - full)


def test_full_steps_on_every_step_is_sleb_on_the_pool(make_context):
    context = make_context("gemma3", num_layers=8, dtype=torch.float64)
    ranking = TISLoss(recheck=2, full_steps=10, bridge=False).rank(context, 3)
    pool = ranking.details["pool"]
    chosen = []
    for _ in range(3):
        trials = {la: dropped_perplexity(context, [*chosen, la]) for la in pool if la not in chosen}
        chosen.append(min(trials, key=lambda la: (trials[la], la)))
    assert ranking.order == chosen
    assert ranking.details["loss_passes"] == 5 + 4 + 3


def test_options_are_checked():
    with pytest.raises(ScoringError, match="loss-pool-extra"):
        TISLoss(pool_extra=-1.0)
    with pytest.raises(ScoringError, match="loss-recheck"):
        TISLoss(recheck=-1)
    with pytest.raises(ScoringError, match="loss-full-steps"):
        TISLoss(full_steps=-1)
    for bad in (True, float("inf"), "0.5"):
        with pytest.raises(ScoringError, match="loss-pool-extra"):
            TISLoss(pool_extra=bad)
    assert TISLoss(pool_extra=0).pool_extra == 0


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "gemma3", "idefics3"])
def test_passes_started_from_stored_streams_give_the_recomputed_losses_for_less_compute(make_context, model_type):
    context = make_context(model_type, num_layers=10, dtype=torch.float64)
    reused = TISLoss(pool_min_extra=3, full_steps=2, bridge=False).rank(context, 4)
    recomputed = TISLoss(pool_min_extra=3, full_steps=2, bridge=False, recompute=True).rank(context, 4)
    assert reused.order == recomputed.order
    assert reused.scores == pytest.approx(recomputed.scores, rel=1e-12, nan_ok=True)
    assert [s["perplexity"] for s in reused.details["greedy_steps"]] == pytest.approx(
        [s["perplexity"] for s in recomputed.details["greedy_steps"]], rel=1e-12)
    assert reused.details["loss_passes"] == recomputed.details["loss_passes"]
    # recomputed: every pass runs every layer it does not bypass
    passes = recomputed.details["loss_passes"]
    assert recomputed.details["decoder_layers_run"] < passes * 10
    assert reused.details["decoder_layers_run"] < 0.8 * recomputed.details["decoder_layers_run"]



def greedy_trials(ranking):
    """(chosen before the step, layers tried) for every greedy step after the first removal."""
    steps = ranking.details["greedy_steps"]
    return [([s["removed"] for s in steps[:k]], steps[k]["tried"]) for k in range(1, len(steps))]


@pytest.mark.parametrize("model_type", ["llava", "idefics3"])
def test_stored_streams_start_every_pass_at_the_layer_it_removes(make_context, model_type):
    """Hand count of the decoder layers the bare search runs: the one-shot pass of the highest pool layer runs
    from the input, every other pass from the stream entering the layer it removes, the stored streams above
    a picked layer being its trial's (a step that kept stale or no streams would start lower and run more)."""
    context = make_context(model_type, num_layers=10, dtype=torch.float64)
    ranking = TISLoss(pool_min_extra=3, full_steps=2, bridge=False).rank(context, 4)
    total, pool = 10, ranking.details["pool"]
    expected = sum(total - 1 - layer for layer in pool) + max(pool)
    for chosen, tried in greedy_trials(ranking):
        expected += sum(sum(1 for la in range(layer + 1, total) if la not in chosen) for layer in tried)
    assert len(greedy_trials(ranking)) == 3 and all(len(tried) > 1 for _, tried in greedy_trials(ranking))
    assert ranking.details["decoder_layers_run"] == expected


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl"])
def test_bridged_passes_start_at_the_writer_below_the_layer_they_remove(make_context, model_type):
    """Hand count for the bridged search: each step's fitting pass runs every kept layer, each trial starts at
    the kept layer below the one it removes (whose output its bridge maps), so every writer's stream is kept."""
    context = make_context(model_type, num_layers=10, dtype=torch.float64)
    ranking = TISLoss(pool_min_extra=3, full_steps=2, bridge=True).rank(context, 4)
    total, pool = 10, ranking.details["pool"]
    assert ranking.details["bridge"] == "on"
    order = ranking.order
    expected = sum(total - step for step in range(len(order)))  # fitting passes over 10, 9, 8, 7 kept layers
    for chosen, tried in [([], pool), *greedy_trials(ranking)]:
        for layer in tried:
            below = [la for la in range(layer) if la not in chosen]
            writer = below[-1] if below else layer  # nothing kept below: the pass starts at the layer
            expected += sum(1 for la in range(writer, total) if la not in {*chosen, layer})
    assert ranking.details["bridge_fit_passes"] == len(order) == 4
    assert ranking.details["decoder_layers_run"] == expected
    # recomputed: every pass runs every layer it keeps, from the input
    again = TISLoss(pool_min_extra=3, full_steps=2, bridge=True, recompute=True).rank(context, 4)
    assert again.order == order
    runs = [([], pool), *greedy_trials(again)]
    fitting = sum(total - step for step in range(4))
    trials = sum(len(tried) * (total - len(chosen) - 1) for chosen, tried in runs)
    assert again.details["decoder_layers_run"] == fitting + trials


# --- bridged loss passes (TISLoss.bridge, docs/design.md §2.5.1) ---------------------------------------------


def merged_copy(context, edits: dict, removed: list[int]):
    """A copy of the model with writer maps merged as weights (W <- T^T W, float64) and `removed` dropped."""
    model = copy.deepcopy(context.model)
    adapter = get_adapter(model)
    for layer, transform in edits.items():
        linear = adapter.residual_writers(layer)["mlp.down_proj"]
        with torch.no_grad():
            linear.weight.copy_((transform.T @ linear.weight.double()).to(linear.weight.dtype))
            if linear.bias is not None:
                linear.bias.copy_((transform.T @ linear.bias.double()).to(linear.bias.dtype))
    if removed:
        drop_layers(model, removed)
    return model


def merged_perplexity(context, edits, removed) -> float:
    model = merged_copy(context, edits, removed)
    batch = context.batches[0]
    with torch.no_grad():
        return math.exp(float(model(**batch.inputs, labels=labels_for(batch), use_cache=False).loss))


def naive_bridge(context, edits, chosen, layer, ridge) -> torch.Tensor:
    """`layer`'s bridge on the model with `edits` merged and `chosen` dropped, from plain hooks and numpy."""
    model = merged_copy(context, edits, chosen)
    adapter = get_adapter(model)
    kept = [la for la in range(context.adapter.num_layers) if la not in chosen]
    position = kept.index(layer)
    seen = {}
    hooks = [
        adapter.layers[position].register_forward_hook(
            lambda mod, args, kwargs, out: seen.update(entering=(args[0] if args else kwargs["hidden_states"]),
                                                       leaving=out[0] if isinstance(out, tuple) else out),
            with_kwargs=True),
        adapter.residual_writers(position - 1)["mlp.down_proj"].register_forward_hook(
            lambda mod, args, out: seen.update(written=out)),
    ]
    batch = context.batches[0]
    with torch.no_grad():
        model(**batch.inputs, use_cache=False)
    for hook in hooks:
        hook.remove()
    mask = batch.at_layers().valid
    written = seen["written"][mask].double().numpy()
    target = seen["leaving"][mask].double().numpy() - seen["entering"][mask].double().numpy() + written
    gram = written.T @ written
    damping = ridge * np.trace(gram) / len(gram)
    return torch.from_numpy(np.linalg.solve(gram + damping * np.eye(len(gram)), written.T @ target))


def test_bridged_trials_equal_merged_bridges_fitted_naively_on_the_pruned_model(make_context):
    """SLEB's step on the pool (every step full), each trial with its bridge fitted on the current model and
    merged into the writer below: the scorer's run-time maps and stored streams give the same losses."""
    context = make_context("llava", num_layers=8, dtype=torch.float64)
    context.batches[0].valid[:, :5] = False  # the fits use the real tokens only: make that a strict subset
    before = {name: value.clone() for name, value in context.model.state_dict().items()}
    ranking = TISLoss(recheck=2, full_steps=10, bridge=True, bridge_ridge=0.05).rank(context, 3)
    pool = ranking.details["pool"]
    edits, chosen, passes = {}, [], 0
    for step in range(3):
        trials = {}
        for layer in [la for la in pool if la not in chosen]:
            below = [la for la in range(layer) if la not in chosen]
            trial = {la: t for la, t in edits.items() if la != layer}
            if below:
                transform = naive_bridge(context, edits, chosen, layer, 0.05)
                trial[below[-1]] = trial[below[-1]] @ transform if below[-1] in trial else transform
            trials[layer] = (merged_perplexity(context, trial, [*chosen, layer]), trial)
        passes += len(trials)
        pick = min(trials, key=lambda la: (trials[la][0], la))
        if step == 0:
            for layer, (perplexity, _) in trials.items():
                assert ranking.scores[layer] == pytest.approx(perplexity, rel=1e-9)
        else:
            assert ranking.details["greedy_steps"][step]["perplexity"] == pytest.approx(trials[pick][0], rel=1e-9)
        edits = trials[pick][1]
        chosen.append(pick)
    assert ranking.order == chosen
    assert ranking.details["loss_passes"] == passes
    assert ranking.details["bridge_fit_passes"] == 3
    for name, value in context.model.state_dict().items():  # maps act through hooks: no weight is edited
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("model_type", ["llava", "qwen2_vl", "idefics3"])
def test_bridged_passes_from_stored_streams_give_the_recomputed_losses(make_context, model_type):
    context = make_context(model_type, num_layers=10, dtype=torch.float64)
    reused = TISLoss(pool_min_extra=3, full_steps=2, bridge=True).rank(context, 4)
    recomputed = TISLoss(pool_min_extra=3, full_steps=2, bridge=True, recompute=True).rank(context, 4)
    assert reused.order == recomputed.order
    assert reused.scores == pytest.approx(recomputed.scores, rel=1e-10, nan_ok=True)
    assert reused.details["decoder_layers_run"] < 0.9 * recomputed.details["decoder_layers_run"]
    bare = TISLoss(pool_min_extra=3, full_steps=2, bridge=False).rank(context, 4)
    assert reused.scores != pytest.approx(bare.scores, rel=1e-6, nan_ok=True)  # the bridges change the losses


def test_without_a_writer_a_map_can_edit_the_bare_losses_rank_and_say_so(make_context, caplog):
    """Gemma 3's MLP writer is followed by a norm: the default (bridged) search falls back to the bare one."""
    context = make_context("gemma3", num_layers=6)
    with caplog.at_level("WARNING", logger="shortlvlm"):
        ranking = TISLoss().rank(context, 2)
    assert ranking.details["bridge"].startswith("off: ") and "followed by" in ranking.details["bridge"]
    assert "bridge_fit_passes" not in ranking.details
    assert any("bare answer losses" in message for message in caplog.messages)
    bare = TISLoss(bridge=False).rank(context, 2)
    assert ranking.order == bare.order and ranking.scores == pytest.approx(bare.scores, nan_ok=True)


def test_the_bridge_is_the_default_and_plans_without_it_ranked_bare():
    from shortlvlm.scoring import scorer_from_dict

    assert TISLoss().bridge is True
    old = {"name": "tis-loss", **TISLoss().to_dict()}
    del old["bridge"], old["bridge_ridge"]
    assert scorer_from_dict(old).bridge is False  # a plan written before the option existed


@pytest.mark.parametrize(("bridge", "count", "recheck", "full"), [
    (False, 1, 3, 4), (False, 4, 3, 1), (False, 4, 0, 0), (False, 4, 2, 2), (True, 1, 3, 4), (True, 4, 3, 1),
    (True, 3, 1, 0), (True, 0, 3, 4), (False, 0, 3, 4),
])
def test_the_progress_bar_total_is_the_batches_the_search_runs(make_context, monkeypatch, bridge, count, recheck,
                                                                full):
    """The bar's total, set before the search from the pool and the options, equals the batches it runs: one-shot
    passes, greedy trials (every remaining pool layer on a full step, `recheck` after, none for a forced pick)
    and the bridged fitting passes."""
    import io

    from tqdm import tqdm

    import shortlvlm.scoring.tis_loss as tis_loss

    bars = []

    def recording(*args, **kwargs):
        bars.append(tqdm(*args, **{**kwargs, "file": io.StringIO(), "mininterval": 0}))
        return bars[-1]

    monkeypatch.setattr(tis_loss, "progress_bar", recording)
    context = make_context("llava", num_layers=10)
    TISLoss(pool_min_extra=3, recheck=recheck, full_steps=full, bridge=bridge).rank(context, count)
    (bar,) = [b for b in bars if b.desc.startswith("tis-loss")]
    assert bar.total == bar.n > 0


def test_a_float32_model_gets_the_float64_models_bridged_search(make_context):
    """The bridges' statistics are accumulated in float64 whatever the model's dtype: the float32 model's search
    picks the layers of its float64 copy, with losses equal to float32 precision."""
    low = make_context("llava", num_layers=10, unpadded=True)
    high = make_context("llava", num_layers=10, dtype=torch.float64)
    ranked = [TISLoss(pool_min_extra=3, full_steps=2, bridge=True).rank(context, 4) for context in (low, high)]
    assert ranked[0].details["bridge"] == "on"
    assert ranked[0].order == ranked[1].order
    assert ranked[0].scores == pytest.approx(ranked[1].scores, rel=1e-4, nan_ok=True)
