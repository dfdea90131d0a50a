"""The method API on the toy LVLM: score once, prune many ratios, compensate, save and reload."""

from __future__ import annotations

import pytest
import torch

from shortlvlm import get_adapter, load
from shortlvlm.capture import CalibrationBatch
from shortlvlm.compensation import SCP, compensation_named
from shortlvlm.data.calibration import toy_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.errors import InvalidLayerSelectionError
from shortlvlm.importance import TIS
from shortlvlm.io.fingerprint import model_fingerprint
from shortlvlm.jobs.checkpoint import write_checkpoint
from shortlvlm.plan import Plan, PlanError
from shortlvlm.pruning import Provenance, prune, score
from shortlvlm.scoring import ScoringError, TISCosine, get_scorer
from shortlvlm.selection import layers_to_remove


@pytest.fixture(scope="module")
def toy():
    return load("toy")


@pytest.fixture(scope="module")
def calib():
    return toy_calibration(16)


@pytest.fixture(scope="module")
def toy_plan(toy, calib):
    """The paper's scorer's plan (TIS-cosine): its method name says short-lvlm, so prune applies SCP."""
    model, processor = toy
    return score(model, processor, scorer=TISCosine(), calibration=calib, provenance=Provenance(source="toy"))


def test_encoded_batches_mark_image_and_answer_tokens(toy, calib):
    model, processor = toy
    batches = encode_calibration(calib[:4], processor, get_adapter(model), batch_size=4)
    batch = batches[0]
    assert batch.image.sum(1).tolist() == [16] * 4  # 4x4 patches per image
    answers = processor.tokenizer.batch_decode(
        [row[mask] for row, mask in zip(batch.inputs["input_ids"], batch.answer, strict=True)])
    assert answers == [s.answer for s in calib[:4]]
    pad = processor.tokenizer.pad_token_id
    assert not (batch.valid & (batch.inputs["input_ids"] == pad)).any()


def test_score_plan_ranks_every_layer_and_round_trips(toy_plan, tmp_path):
    assert toy_plan.num_layers_before == 16 and toy_plan.removed_layers == []
    assert sorted(toy_plan.params["removal_order"]) == list(range(16))
    assert toy_plan.calibration["num_samples"] == 16 and len(toy_plan.calibration["hash"]) == 64
    assert 0 < toy_plan.params["visual_share_of_important_tokens"] < 1
    toy_plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == toy_plan


def test_pruning_from_a_plan_does_not_recalibrate(toy_plan, calib, monkeypatch):
    import shortlvlm.pruning as pruning

    calls = []
    monkeypatch.setattr(pruning, "encode_calibration", lambda *a, **k: calls.append(1))
    for ratio, count in ((0.1, 2), (0.3, 5)):
        model, processor = load("toy")
        model, plan = prune(model, processor, ratio, compensation=None, plan=toy_plan)
        assert plan.removed_layers == sorted(toy_plan.params["removal_order"][:count])
        assert get_adapter(model).num_layers == 16 - count
    assert calls == []


def test_short_lvlm_prune_compensates_saves_reloads_and_generates(toy_plan, calib, tmp_path):
    model, processor = load("toy")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, plan = prune(model, processor, 0.3, compensation=SCP(), calibration=calib, plan=toy_plan)
    assert plan.method == "short-lvlm" and plan.compensation == "scp"
    edited = [e["edited_layer"] for e in plan.params["compensation_report"] if e["edited_layer"] is not None]
    assert edited and all(layer not in plan.removed_layers for layer in edited)
    for layer in edited:
        name = f"model.language_model.layers.{layer}.mlp.down_proj.weight"
        kept_index = [i for i in range(16) if i not in plan.removed_layers].index(layer)
        now = dict(model.named_parameters())[f"model.language_model.layers.{kept_index}.mlp.down_proj.weight"]
        assert not torch.equal(now, before[name])
    out, report = write_checkpoint(model, processor, plan, tmp_path / "pruned")
    assert report.max_abs_logit_diff < 1e-4 and report.generation_agrees
    reloaded, reloaded_processor = load(out)
    assert reloaded.config.text_config.num_hidden_layers == 11
    from shortlvlm.data.benchmarks.shapes import load_shapes
    from shortlvlm.eval.generate import answer_samples

    questions = load_shapes(6)
    answers = answer_samples(reloaded, reloaded_processor, questions)
    assert answers == answer_samples(model, processor, questions)
    assert all(answers[q.id] for q in questions)
    assert Plan.load(out / "pruning_plan.json").removed_layers == plan.removed_layers


def test_the_defaults_are_tis_loss_with_the_least_squares_bridge(toy, calib):
    """score() and prune() without a scorer or compensation: tis-loss scoring, LstSq bridges, and the plans
    name the recipe, so `prune --plan` of a default score applies the bridge."""
    model, processor = toy
    # tis-loss's ranking depends on how many layers go (its pool and steps): score for the count prune removes
    scored = score(model, processor, calibration=calib[:8], num_remove=3, provenance=Provenance(source="toy"))
    assert scored.method == "tis-loss+lstsq" and scored.compensation == "lstsq"
    assert scored.scorer["name"] == "tis-loss"
    model, processor = load("toy")
    model, plan = prune(model, processor, 0.2, calibration=calib[:8], provenance=Provenance(source="toy"))
    assert plan.method == "tis-loss+lstsq" and plan.compensation == "lstsq" and plan.scorer["name"] == "tis-loss"
    # the same ranking as score()'s, and every run above layer 0 bridged (a least-squares report per run)
    assert plan.removed_layers == sorted(scored.params["removal_order"][:3])
    report = plan.params["compensation_report"]
    assert report and all("gap_left" in entry for entry in report if entry["edited_layer"] is not None)


def test_ratio_errors():
    adapter = get_adapter(load("toy")[0])
    assert layers_to_remove(0.3, adapter) == 5
    for ratio, message in ((0, "strictly between"), (1.0, "strictly between"), (0.01, "removes no layer"),
                           (0.99, "at most 15")):
        with pytest.raises(InvalidLayerSelectionError, match=message):
            layers_to_remove(ratio, adapter)


def test_plan_for_another_model_is_refused(toy_plan, toy):
    model, processor = load("toy")
    other = Plan.from_dict({**toy_plan.to_dict(), "num_layers_before": 12})
    with pytest.raises(PlanError, match="12 decoder layers"):
        prune(model, processor, 0.3, compensation=None, plan=other)
    foreign = Plan.from_dict({**toy_plan.to_dict(), "model": {**toy_plan.model, "fingerprint": "0" * 16}})
    with pytest.raises(PlanError, match="another model"):
        prune(model, processor, 0.3, compensation=None, plan=foreign)
    assert toy_plan.model["fingerprint"] == model_fingerprint(model)


def test_unknown_method_and_compensation(toy):
    model, processor = load("toy")
    with pytest.raises(ScoringError, match="unknown method"):
        prune(model, processor, 0.3, provenance=Provenance(method="nope"))
    every = r"SCP\(...\), LstSq\(...\), Cosine\(...\), Magnitude\(...\), LaCo\(...\), or None"
    with pytest.raises(ScoringError, match=r"unknown compensation .magic.; pass one of " + every):
        prune(model, processor, 0.3, compensation="magic")


def test_batches_are_reused_for_scoring_and_compensation(toy, calib, monkeypatch):
    import shortlvlm.pruning as pruning

    encoded: list[list[CalibrationBatch]] = []
    original = pruning.encode_calibration
    monkeypatch.setattr(pruning, "encode_calibration", lambda *a, **k: encoded.append(original(*a, **k)) or encoded[-1])
    model, processor = load("toy")
    prune(model, processor, 0.2, calibration=calib[:8])
    assert len(encoded) == 1


@pytest.mark.parametrize("compensation", ["none", "scp", "lstsq"])
@pytest.mark.parametrize("method", ["block-influence", "angular", "sleb", "taylor", "ppl"])
def test_every_baseline_combines_with_every_compensation(calib, method, compensation):
    model, processor = load("toy")
    count = layers_to_remove(0.2, get_adapter(model))
    model, plan = prune(model, processor, 0.2, scorer=get_scorer(method),
                        compensation=compensation_named(compensation), calibration=calib[:8])
    assert len(plan.removed_layers) == count and get_adapter(model).num_layers == 16 - count
    assert plan.compensation == compensation and plan.scorer["name"] == method
    assert ("compensation_report" in plan.params) == (compensation != "none")
    recorded = None if compensation == "none" else compensation_named(compensation).to_dict()
    if compensation == "scp":  # "follow the scorer": every real token for a scorer without TIS
        recorded["tis"] = TIS(tokens="all").to_dict()
    assert plan.compensation_options == recorded
    if method == "angular":
        assert plan.removed_layers == plan.params["removal_sets"][str(count)]
        assert plan.removed_layers == list(range(plan.removed_layers[0], plan.removed_layers[0] + count))
    with torch.no_grad():
        encoded = encode_calibration(calib[:2], processor, get_adapter(model))[0]
        assert torch.isfinite(model(**encoded.inputs).logits).all()
