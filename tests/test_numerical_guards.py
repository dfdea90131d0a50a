"""Numerical trouble is reported with where it happened and what to do, never averaged into a plan."""

from __future__ import annotations

import math

import pytest
import torch

from shortlvlm import get_adapter
from shortlvlm.capture import batch_from_inputs
from shortlvlm.cli import main
from shortlvlm.compensation import SCP, compensate
from shortlvlm.errors import ShortLVLMError
from shortlvlm.importance import TIS
from shortlvlm.scoring import ScoringContext, get_scorer
from shortlvlm.testbeds.tiny import tiny_inputs, tiny_model
from tests.scoring.conftest import with_answers

OVERFLOWING_LAYER = 2


def overflowing_context(dtype: torch.dtype) -> ScoringContext:
    """A tiny LLaVA whose layer 2 writes ~1e5 into the residual stream: finite in float32, inf in float16."""
    torch.manual_seed(0)
    model = tiny_model("llava", 8)
    adapter = get_adapter(model)
    with torch.no_grad():
        adapter.layers[OVERFLOWING_LAYER].mlp.down_proj.weight.mul_(1e7)
    model = model.to(dtype)
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tiny_inputs(model.config).items()}
    return with_answers(ScoringContext(model, adapter, [batch_from_inputs(adapter, inputs)]))


SCORERS = ["tis-cosine", "block-influence", "angular", "ppl", "sleb", "taylor"]


@pytest.mark.parametrize("scorer", SCORERS)
def test_float16_overflow_is_reported_with_the_fix_and_float32_works(scorer):
    with pytest.raises(ShortLVLMError, match=r"NaN|Inf|inf|nan") as caught:
        get_scorer(scorer).rank(overflowing_context(torch.float16), 2)
    message = str(caught.value)
    assert "float32" in message and "--dtype" in message
    if scorer in ("tis-cosine", "block-influence", "angular"):  # the capture pass names the layer
        assert f"decoder layer {OVERFLOWING_LAYER} produced NaN/Inf" in message
    ranking = get_scorer(scorer).rank(overflowing_context(torch.float32), 2)
    assert len(ranking.order) >= 2
    assert all(math.isfinite(s) for s in ranking.scores if s is not None and not math.isnan(s))


def test_scp_with_float16_overflow_is_refused_not_applied():
    context = overflowing_context(torch.float16)
    before = {k: v.clone() for k, v in context.model.state_dict().items()}
    with pytest.raises(ShortLVLMError, match=f"decoder layer {OVERFLOWING_LAYER} produced NaN/Inf"):
        compensate(context.model, context.adapter, context.batches, [3, 4], SCP(tis=TIS(tokens="all")))
    after = context.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing edited


def test_scp_statistics_with_nan_are_refused(monkeypatch):
    import shortlvlm.compensation.scp as compensation

    context = overflowing_context(torch.float32)
    real = compensation.measure_gaps

    def poisoned(*args, **kwargs):
        measured = real(*args, **kwargs)
        measured["hth.2"][0, 0] = math.inf
        return measured

    monkeypatch.setattr(compensation, "measure_gaps", poisoned)
    with pytest.raises(ShortLVLMError, match=r"removed layers \[3, 4\] contain NaN/Inf.*--dtype"):
        compensate(context.model, context.adapter, context.batches, [3, 4], SCP(tis=TIS(tokens="all")))


def test_scp_over_layers_that_change_nothing_edits_nothing():
    """H = 0 (the removed layer is an identity): no direction to bridge, weights untouched, no NaN."""
    context = overflowing_context(torch.float32)
    layer = context.adapter.layers[4]
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    before = {k: v.clone() for k, v in context.model.state_dict().items()}
    (entry,) = compensate(context.model, context.adapter, context.batches, [4], SCP(tis=TIS(tokens="all")))
    assert entry["edited_layer"] == 3 and entry["rank"] == 0 and "no gap" in entry["reason"]
    assert all(torch.equal(before[k], v) for k, v in context.model.state_dict().items())
    assert "nan" not in repr(entry).lower()


@pytest.mark.parametrize("alpha", [math.nan, math.inf, True])
def test_non_finite_alpha_is_refused(alpha):
    context = overflowing_context(torch.float32)
    with pytest.raises(ShortLVLMError, match="finite number"):
        compensate(context.model, context.adapter, context.batches, [3], SCP(alpha=alpha))


def test_cli_reports_the_overflow_in_one_line(tmp_path, capsys):
    from shortlvlm.io.load import load

    model, processor = load("toy", dtype=torch.float32)
    with torch.no_grad():  # finite in float32 (>1e5 in the residual stream), inf in float16
        get_adapter(model).layers[OVERFLOWING_LAYER].mlp.down_proj.weight.mul_(1e6)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    argv = ["score", str(tmp_path / "model"), "--method", "block-influence", "--calib", "toy", "--num-samples", "8"]
    out = tmp_path / "plan.json"
    assert main([*argv, "--dtype", "float16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"decoder layer {OVERFLOWING_LAYER} produced NaN/Inf activations (torch.float16)" in err
    assert "--dtype" in err and "Traceback" not in err and not out.exists()
    assert main([*argv, "--dtype", "float32", "--out", str(out)]) == 0  # the suggested fix works
    assert out.exists()


def test_a_model_without_processor_cannot_be_calibrated_and_says_why():
    from shortlvlm.data.calibration import toy_calibration
    from shortlvlm.data.encode import encode_calibration

    context = overflowing_context(torch.float32)
    with pytest.raises(ShortLVLMError, match="no processor or tokenizer"):
        encode_calibration(toy_calibration(2), None, context.adapter)
